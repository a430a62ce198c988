"""Shop policy of the demo world: one fact per support intent, its wrong variants, and how to spot them.

The demo shop answers six kinds of customer question (the intents). Each intent has exactly one true policy
fact and two or three plausible wrong variants. A variant is a `Claim`: the sentences that state it (used to
write replies) and a value pattern that recognises it (used by the gold rubric).

A claim is recognised sentence by sentence: the sentence must mention the intent's topic (`TOPICS`) and match
the claim's value pattern, so a bare "30 days" in a sentence about delivery is not a returns claim. True
claims are also refused in a sentence holding a negation ("returns are not accepted within 30 days"); the
wrong variants that are negative statements carry the negation inside their own pattern.

Value patterns are disjoint across intents (no claim pattern fires on another claim's sentences), which the
test suite checks phrasing by phrasing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INTENTS: tuple[str, ...] = ("order_status", "returns", "shipping", "payments", "cancellations", "warranty")
UNKNOWN_INTENT = "other"

# Words that show a reply talks about an intent (reply side; the prompt side lives in prompts.py).
TOPICS: dict[str, re.Pattern[str]] = {
    "order_status": re.compile(r"\btrack(?:ing|ed)?\b|\bon its way\b"),
    "returns": re.compile(r"\breturn(?:s|ed|ing)?\b|\bsend (?:it|them) back\b"),
    "shipping": re.compile(r"\bshipping\b|\bshipped\b|\bdeliver(?:y|ies|ed)?\b|\bcourier\b"),
    "payments": re.compile(r"\brefund(?:s|ed)?\b|\bcharged\b|\bpayment\b|\bstore credit\b"),
    "cancellations": re.compile(r"\bcancel(?:s|led|ling|lation|lations)?\b"),
    "warranty": re.compile(r"\bwarrant(?:y|ies)\b|\bguarantee\b|\brepair\b|\bfaulty\b"),
}

NEGATION = re.compile(r"\b(?:not|no|never|cannot|can't|won't|don't|doesn't|isn't|aren't)\b")


@dataclass(frozen=True)
class Claim:
    """One statement of shop policy, true or false, with the sentences that state it."""

    intent: str
    key: str  # "<intent>/<short name>", unique
    true: bool
    pattern: re.Pattern[str]  # matched against one lower-cased sentence that also mentions the intent's topic
    phrasings: tuple[str, ...]  # str.format templates; fields: the_product, to_city, your_order, method


def _claim(intent: str, name: str, true: bool, pattern: str, *phrasings: str) -> Claim:
    return Claim(intent, f"{intent}/{name}", true, re.compile(pattern), tuple(phrasings))


_RANGE = r"\s*(?:-|–|to)\s*"

CLAIMS: tuple[Claim, ...] = (
    # order_status: orders leave within 1 business day; tracking link in the dispatch email.
    _claim(
        "order_status",
        "1-business-day",
        True,
        r"\b(?:1|one) business day\b",
        "Orders are dispatched within 1 business day, and the tracking link is in your dispatch email.",
        "Tracking details for {your_order} are emailed within 1 business day, once it is dispatched.",
        "Your tracking link arrives by email within 1 business day of ordering.",
    ),
    _claim(
        "order_status",
        "10-business-days",
        False,
        r"\b(?:10|ten) business days\b",
        "Orders are dispatched after 10 business days, and tracking starts then.",
        "Tracking details for {your_order} are emailed within 10 business days of ordering.",
    ),
    _claim(
        "order_status",
        "no-tracking",
        False,
        r"\b(?:do not|don't|cannot|can't) (?:offer|provide|give) tracking\b|\btracking is not (?:available|offered)\b",
        "We do not offer tracking for orders.",
        "Tracking is not available for {your_order}.",
    ),
    # returns: accepted within 30 days of purchase.
    _claim(
        "returns",
        "30-days",
        True,
        r"\b30[- ]days?\b",
        "You can return {the_product} within 30 days of purchase.",
        "Returns are accepted within 30 days of purchase.",
        "Our return window is 30 days from purchase.",
    ),
    _claim(
        "returns",
        "short-window",
        False,
        r"\b(?:7|14)[- ]days?\b",
        "You can return {the_product} within 14 days of purchase.",
        "Returns are accepted within 7 days of purchase.",
    ),
    _claim(
        "returns",
        "no-returns",
        False,
        r"\bsales are final\b|\b(?:cannot|can't) be returned\b|\b(?:do not|don't) accept returns\b",
        "All sales are final, so items cannot be returned.",
        "We do not accept returns on {the_product}.",
    ),
    # shipping: standard delivery takes 3-5 business days.
    _claim(
        "shipping",
        "3-5-days",
        True,
        r"\b3" + _RANGE + r"5 business days\b",
        "Standard delivery {to_city} takes 3-5 business days.",
        "Our standard shipping takes 3-5 business days.",
        "Orders are delivered {to_city} in 3-5 business days.",
    ),
    _claim(
        "shipping",
        "1-2-days",
        False,
        r"\b1" + _RANGE + r"2 business days\b",
        "Standard delivery {to_city} takes 1-2 business days.",
        "Our standard shipping takes 1-2 business days.",
    ),
    _claim(
        "shipping",
        "10-14-days",
        False,
        r"\b10" + _RANGE + r"14 business days\b",
        "Standard delivery {to_city} takes 10-14 business days.",
        "Orders are delivered {to_city} in 10-14 business days.",
    ),
    # payments: refunds go to the original payment method within 5-7 business days.
    _claim(
        "payments",
        "5-7-days",
        True,
        r"\b5" + _RANGE + r"7 business days\b",
        "Refunds go back to your original payment method within 5-7 business days.",
        "The money is refunded to your {method} within 5-7 business days.",
        "Any refund reaches your original payment method in 5-7 business days.",
    ),
    _claim(
        "payments",
        "store-credit",
        False,
        r"\bstore credit\b",
        "Refunds are only given as store credit.",
        "The money is refunded as store credit, not to your {method}.",
    ),
    _claim(
        "payments", "24-hours", False, r"\b(?:24|twenty-four) hours\b", "Refunds reach your {method} within 24 hours."
    ),
    _claim(
        "payments",
        "30-business-days",
        False,
        r"\b30 business days\b",
        "Any refund reaches your original payment method in 30 business days.",
    ),
    # cancellations: free before dispatch.
    _claim(
        "cancellations",
        "free",
        True,
        r"\bfree\b",
        "You can cancel {your_order} for free before it is dispatched.",
        "Cancelling is free until the order is dispatched.",
        "Orders can be cancelled for free any time before dispatch.",
    ),
    _claim(
        "cancellations",
        "fee",
        False,
        r"\b\d+ ?% (?:cancellation )?fee\b|\bfee of \d+ ?%",
        "Cancelling {your_order} costs a 15% fee.",
        "A 20% fee applies to every cancellation.",
    ),
    _claim(
        "cancellations",
        "impossible",
        False,
        r"\b(?:cannot|can't) be cancell?ed\b|\bnot possible to cancel\b",
        "Orders cannot be cancelled once placed.",
        "It is not possible to cancel {your_order} now.",
    ),
    # warranty: every product carries a 2-year warranty.
    _claim(
        "warranty",
        "2-years",
        True,
        r"\b(?:2|two)[- ]years?\b",
        "{The_product} comes with a 2-year warranty.",
        "All our products carry a 2-year warranty against faults.",
        "Our warranty covers faults for 2 years.",
    ),
    _claim(
        "warranty",
        "90-days",
        False,
        r"\b90[- ]days?\b",
        "The warranty on {the_product} only lasts 90 days.",
        "Our warranty covers faults for 90 days.",
    ),
    _claim(
        "warranty",
        "none",
        False,
        r"\b(?:do not|don't|does not|doesn't) (?:come with|carry|include) (?:a |any )?warranty\b",
        "Our products do not come with a warranty.",
        "{The_product} does not carry a warranty.",
    ),
)

CLAIMS_BY_INTENT: dict[str, tuple[Claim, ...]] = {
    intent: tuple(c for c in CLAIMS if c.intent == intent) for intent in INTENTS
}

# The true fact of each intent, in words, for documentation and reports.
POLICY_FACTS: dict[str, str] = {
    "order_status": "Orders are dispatched within 1 business day; the tracking link is in the dispatch email.",
    "returns": "Returns are accepted within 30 days of purchase.",
    "shipping": "Standard delivery takes 3-5 business days.",
    "payments": "Refunds go back to the original payment method within 5-7 business days.",
    "cancellations": "Cancelling is free until the order is dispatched.",
    "warranty": "Every product carries a 2-year warranty against faults.",
}

# A follow-up sentence per intent that states no claim (used to vary replies).
FOLLOW_UPS: dict[str, tuple[str, ...]] = {
    "order_status": ("You can follow each step with the tracking link.", "The tracking page shows where it is now."),
    "returns": ("Start the return from the Orders page of your account.", "Print the return label from your account."),
    "shipping": ("Express delivery is also offered at checkout.", "The courier will email you a delivery slot."),
    "payments": (
        "The refund shows on your statement once it is processed.",
        "You will see it on your statement as ShopCo.",
    ),
    "cancellations": ("Use the Cancel button on the Orders page of your account.",),
    "warranty": ("We will repair or replace it if a fault is found.", "Send us a photo and we will arrange a repair."),
}


def topics_in(text: str) -> set[str]:
    """Intents whose topic words appear in `text` (any case)."""
    lowered = text.lower()
    return {intent for intent, pattern in TOPICS.items() if pattern.search(lowered)}


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")


def detect_claims(text: str) -> list[Claim]:
    """The policy claims `text` states, each once, in `CLAIMS` order (true claims need a negation-free sentence)."""
    found: set[str] = set()
    for sentence in _SENTENCE_SPLIT.split(text.lower()):
        negated = NEGATION.search(sentence) is not None
        for claim in CLAIMS:
            if claim.key in found or not TOPICS[claim.intent].search(sentence):
                continue
            if claim.true and negated:
                continue
            if claim.pattern.search(sentence):
                found.add(claim.key)
    return [c for c in CLAIMS if c.key in found]
