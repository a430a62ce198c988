"""Utility subcommands of the ``rlhf`` CLI (config, lineage, models, train dispatch)."""
