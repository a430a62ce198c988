"""Prompt and preference data: PII scrubbing, prompt-set loading, dedup and splits, HH-RLHF import.

Modules: :mod:`rlhf.data.pii` (scrubbers), :mod:`rlhf.data.prompts` (loading, normalisation, ids),
:mod:`rlhf.data.dedup` (exact/near-duplicate clusters, dedup, train/eval split), :mod:`rlhf.data.hh`
(HH-RLHF transcripts to prompt/chosen/rejected text and chat messages).
"""
