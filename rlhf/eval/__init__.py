"""Evaluation: statistics for comparing checkpoints, scoring, reports and human A/B evaluation.

Pure statistics (numpy/scipy only): :mod:`rlhf.eval.stats` (win rates, paired bootstrap, exact binomial
intervals), :mod:`rlhf.eval.length_control` (AlpacaEval-2-style length-controlled win rate),
:mod:`rlhf.eval.divergence` (sequence-level Monte Carlo KL, best-of-n), :mod:`rlhf.eval.human` (blind A/B
pairing and vote merging). The ``evaluate`` modules in the package's ``metrics/`` folder (``rlhf/eval/metrics/<name>/<name>.py``,
package data) wrap them.

Model side: :mod:`rlhf.eval.judge` (pairwise judges asked in both orders), :mod:`rlhf.eval.sampling` (what
``rlhf eval`` runs). Tables and reports: :mod:`rlhf.eval.analysis`, :mod:`rlhf.eval.svg`,
:mod:`rlhf.eval.report_html`, :mod:`rlhf.eval.datacard`. Submodules are imported where used.
"""
