"""The preference loop: a round of candidates into Argilla and human rankings back out as training pairs.

The building blocks of ``push`` (candidates -> one dataset per round, slots shuffled, slot map and honeypot
answers kept outside Argilla), ``simulate`` (bot annotators through the annotator API), ``status`` (progress
per annotator) and ``pull`` (a versioned snapshot: raw responses, pairs, quality report). The stage recipes
are :mod:`rlhf.stages.label_push`, :mod:`~rlhf.stages.label_simulate` and :mod:`~rlhf.stages.label_pull`,
their configs :mod:`rlhf.configs.label`, the commands :mod:`rlhf.cli.label_loop_cmd`; the method in
docs/preference-loop.md.
"""
