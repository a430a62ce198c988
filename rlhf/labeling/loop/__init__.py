"""The preference loop: a round of candidates into Argilla and human rankings back out as training pairs.

``push`` (candidates -> one dataset per round, slots shuffled, slot map and honeypot answers kept outside
Argilla), ``simulate`` (bot annotators through the annotator API), ``status`` (progress per annotator) and
``pull`` (a versioned snapshot: raw responses, pairs, quality report). Configs in ``config``; the commands
in :mod:`rlhf.cli.label_loop_cmd`; the method in docs/preference-loop.md.
"""
