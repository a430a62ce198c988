"""Serving the aligned policy and closing the loop: an OpenAI-compatible chat API on Ray Serve, the feedback
store (explicit thumbs, escalations and comments; implicit rephrases, abandons and asks for a human), guardrails,
Prometheus metrics over the store, simulated customers, and the export of feedback into the next round's
prompts."""
