"""The demo world in one import: an online shop's support desk, its prompts, replies and gold rubric.

A tiny model learns support replies from `sft_corpus`, whose replies are deliberately of mixed quality
(each axis drawn independently: right or wrong policy fact, on or off the asked intent, polite or curt,
concise or rambling), so the SFT policy samples a spread of gold scores that RL can move upwards.
`gold_rubric(prompt, response)` is the ground truth that simulated annotators rank by and evaluation
reports; any callable with the same signature can stand in for it.

Parts: `policy` (facts and claim detection), `phrases` (style pools and markers), `prompts` (prompt
generator and parser), `responses` (reply writer), `rubric` (the gold score).
"""

from __future__ import annotations

import random

from rlhf.world.policy import INTENTS, POLICY_FACTS, UNKNOWN_INTENT, detect_claims
from rlhf.world.prompts import DemoPrompt, ParsedPrompt, generate_prompts, intent_of, parse_prompt, to_chat
from rlhf.world.responses import ResponseQuality, generate_response
from rlhf.world.rubric import AXES, WEIGHTS, gold_rubric, rubric_breakdown

__all__ = [
    "AXES",
    "INTENTS",
    "POLICY_FACTS",
    "UNKNOWN_INTENT",
    "WEIGHTS",
    "DemoPrompt",
    "ParsedPrompt",
    "ResponseQuality",
    "detect_claims",
    "generate_prompts",
    "generate_response",
    "gold_rubric",
    "intent_of",
    "parse_prompt",
    "rubric_breakdown",
    "sft_corpus",
    "to_chat",
]


def sft_corpus(n: int, seed: int, good_fraction: float = 0.5) -> list[dict]:
    """`n` prompt-completion records {"prompt", "completion", "intent", "gold"}, deterministic for `seed`.

    Each reply's four quality axes are drawn independently, each on its good side with probability
    `good_fraction`; `gold` is `gold_rubric(prompt, completion)`. The prompt is the user message text only.
    """
    if (
        isinstance(good_fraction, bool)
        or not isinstance(good_fraction, (int, float))
        or not 0.0 <= good_fraction <= 1.0
    ):
        raise ValueError(f"good_fraction must be a number in [0, 1], got {good_fraction!r}")
    prompts = generate_prompts(n, seed)
    rng = random.Random(f"sft-corpus:{seed}")
    records = []
    for prompt in prompts:
        completion = generate_response(prompt, ResponseQuality.draw(rng, good_fraction), rng)
        records.append(
            {
                "prompt": prompt.text,
                "completion": completion,
                "intent": prompt.intent,
                "gold": gold_rubric(prompt.text, completion),
            }
        )
    return records
