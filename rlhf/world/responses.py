"""Support replies of the demo world, written to order along four quality axes.

A reply is opener + body + closer, with filler sentences spliced in when it rambles:
- `correct`: the body states a true policy claim, else a wrong variant of the same intent's fact;
- `on_intent`: the body is about the asked intent, else about another intent picked at random;
- `polite`: greets the customer by name and thanks them or signs off kindly, else a curt (sometimes brusque) frame;
- `concise`: no filler, else two filler sentences at random places.
Each axis is set independently, so the 16 combinations all occur. Templates vary in wording but keep one
structure, which a tiny model can learn; replies are about 8 to 65 words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhf.world.phrases import (
    CURT_CLOSERS,
    CURT_OPENERS,
    CURT_OPENERS_NO_ORDER,
    FILLERS,
    POLITE_CLOSERS,
    POLITE_OPENERS,
    POLITE_OPENERS_WITH_ORDER,
)
from rlhf.world.policy import CLAIMS_BY_INTENT, FOLLOW_UPS, INTENTS
from rlhf.world.prompts import DemoPrompt

RAMBLE_FILLERS = 2
FOLLOW_UP_PROBABILITY = 0.4


@dataclass(frozen=True)
class ResponseQuality:
    """Which side of each quality axis a reply is written on (True is the good side)."""

    correct: bool = True
    on_intent: bool = True
    polite: bool = True
    concise: bool = True

    @classmethod
    def draw(cls, rng: random.Random, good_fraction: float) -> ResponseQuality:
        """Each axis good with probability `good_fraction`, independently."""
        return cls(*(rng.random() < good_fraction for _ in range(4)))

    @property
    def flaws(self) -> tuple[str, ...]:
        """Names of the axes on their bad side."""
        return tuple(k for k in ("correct", "on_intent", "polite", "concise") if not getattr(self, k))


def _fields(prompt: DemoPrompt) -> dict[str, str]:
    slots = prompt.slots
    product = slots.get("product")
    order = slots.get("order")
    return {
        "name": slots.get("name", "there"),
        "order": order or "",
        "the_product": f"the {product}" if product else "the item",
        "The_product": f"The {product}" if product else "The item",
        "to_city": f"to {slots['city']}" if "city" in slots else "to you",
        "your_order": f"order {order}" if order else "your order",
        "method": slots.get("method", "card"),
    }


def _frame(prompt: DemoPrompt, polite: bool, rng: random.Random, fields: dict[str, str]) -> tuple[str, str]:
    has_order = "order" in prompt.slots
    if polite:
        openers = POLITE_OPENERS + (POLITE_OPENERS_WITH_ORDER if has_order else ())
        opener = rng.choice(openers).format(**fields)
        thanked = "thank" in opener.lower()
        closer = rng.choice(POLITE_CLOSERS) if (not thanked or rng.random() < 0.5) else ""
        return opener, closer
    opener = rng.choice(CURT_OPENERS if has_order else CURT_OPENERS_NO_ORDER).format(**fields)
    return opener, rng.choice(CURT_CLOSERS)


def generate_response(prompt: DemoPrompt, quality: ResponseQuality, rng: random.Random) -> str:
    """A reply to `prompt` written on the given side of each quality axis; randomness only from `rng`."""
    fields = _fields(prompt)
    topic = prompt.intent if quality.on_intent else rng.choice([i for i in INTENTS if i != prompt.intent])
    claims = [c for c in CLAIMS_BY_INTENT[topic] if c.true == quality.correct]
    claim = rng.choice(claims)
    body = [rng.choice(claim.phrasings).format(**fields)]
    if rng.random() < FOLLOW_UP_PROBABILITY:
        body.append(rng.choice(FOLLOW_UPS[topic]))
    opener, closer = _frame(prompt, quality.polite, rng, fields)
    sentences = [s for s in (opener, *body, closer) if s]
    if not quality.concise:
        for filler in rng.sample(FILLERS, RAMBLE_FILLERS):
            sentences.insert(rng.randint(1 if opener else 0, len(sentences)), filler)
    return " ".join(sentences)
