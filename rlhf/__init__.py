"""rlhf-pipeline: human-in-the-loop RLHF."""

__version__ = "0.1.0"
