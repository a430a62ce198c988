"""Gold rubric of the demo world: scores any reply to any prompt string in [0, 1].

    total = fluency * (0.40 * correct + 0.30 * on_intent + 0.15 * polite + 0.15 * concise)

The prompt is parsed from its raw text (`parse_prompt`): intent, customer name, order number, product.
Correctness judges truth and on_intent judges relevance, separately: a true fact about the wrong intent keeps
its correctness. A prompt whose intent is not recognised gives on_intent 0. Each axis is in [0, 1]:

- correct: 1 when the reply states at least one true policy claim and no false one (stating the right and a
  wrong fact together scores 0; so does stating nothing). Halved when the reply names an order number or a
  catalogue product that the prompt does not (a reply about someone else's order).
- on_intent: 1 when the reply states a claim of the asked intent, 0.5 when it only mentions the asked topic,
  0 otherwise; then reduced by 0.5 per other intent whose claim it states and 0.25 per other intent it only
  mentions, floored at 0 (a reply covering every intent is off-intent).
- polite: greeting with the customer's name 0.5 (name without greeting 0.35, greeting without name 0.25,
  a wrong name 0), plus 0.5 for any thanks or kind sign-off, minus 0.5 per brusque phrase. Repeating
  courtesy never raises it past 1.
- concise: 0 without any policy claim (nothing said); else 1 minus 0.5 per filler phrase and per courtesy
  phrase beyond the third, minus 1/30 per word beyond 45.
- fluency (a multiplier for degenerate text): 0 for empty text; falls with words repeated back to back
  (above 5 % of word pairs), repeated word trigrams (above 10 % repeated), a dominant word (above 25 % of
  words, 10 words or more) and tokens without any ASCII letter or digit (below 90 %).

Weights favour substance (correct, on_intent) over style (polite, concise); style alone reaches at most 0.3.
"""

from __future__ import annotations

import itertools
import re

from rlhf.world.phrases import COURTESY, FILLER_MARKERS, GENERIC_ADDRESSEES, GREETED_WORD, GREETING, RUDE
from rlhf.world.policy import UNKNOWN_INTENT, Claim, detect_claims, topics_in
from rlhf.world.prompts import NAMES, ORDER_NUMBER, PRODUCTS, ParsedPrompt, parse_prompt

WEIGHTS: dict[str, float] = {"correct": 0.40, "on_intent": 0.30, "polite": 0.15, "concise": 0.15}
AXES: tuple[str, ...] = tuple(WEIGHTS)

HALLUCINATED_DETAIL_FACTOR = 0.5
OTHER_CLAIM_PENALTY = 0.5
OTHER_TOPIC_PENALTY = 0.25
RUDE_PENALTY = 0.5
FILLER_PENALTY = 0.5
MAX_COURTESY_PHRASES = 3
CONCISE_WORDS = 45
WORDS_PER_LENGTH_POINT = 30

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NAME_WORDS = {n: re.compile(rf"\b{n}\b") for n in NAMES}


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def _correct(parsed: ParsedPrompt, response: str, claims: list[Claim]) -> float:
    if not any(c.true for c in claims) or any(not c.true for c in claims):
        return 0.0
    orders = set(ORDER_NUMBER.findall(response))
    lowered = response.lower()
    products = {p.lower() for p in PRODUCTS if p.lower() in lowered}
    hallucinated = bool(orders - {parsed.order}) or bool(products - {parsed.product})
    return HALLUCINATED_DETAIL_FACTOR if hallucinated else 1.0


def _on_intent(parsed: ParsedPrompt, response: str, claims: list[Claim]) -> float:
    if parsed.intent == UNKNOWN_INTENT:
        return 0.0
    claim_intents = {c.intent for c in claims}
    topic_intents = topics_in(response) | claim_intents
    asked = 1.0 if parsed.intent in claim_intents else 0.5 if parsed.intent in topic_intents else 0.0
    other_claims = claim_intents - {parsed.intent}
    other_topics = topic_intents - claim_intents - {parsed.intent}
    return asked * _clamp(1.0 - OTHER_CLAIM_PENALTY * len(other_claims) - OTHER_TOPIC_PENALTY * len(other_topics))


def _polite(parsed: ParsedPrompt, response: str) -> float:
    greeted = GREETING.match(response) is not None
    named = {n for n, pattern in _NAME_WORDS.items() if pattern.search(response)}
    greeted_word = GREETED_WORD.match(response)
    wrong_name = bool(named - {parsed.name}) or (
        greeted_word is not None
        and greeted_word.group(1) != parsed.name
        and greeted_word.group(1).lower() not in GENERIC_ADDRESSEES
    )
    name_used = parsed.name is not None and re.search(rf"\b{re.escape(parsed.name)}\b", response) is not None
    if wrong_name:
        greet = 0.0
    elif parsed.name is None:
        greet = 0.5 if greeted else 0.0
    else:
        greet = 0.5 if greeted and name_used else 0.35 if name_used else 0.25 if greeted else 0.0
    courtesy = 0.5 if COURTESY.search(response) else 0.0
    return _clamp(greet + courtesy - RUDE_PENALTY * len(RUDE.findall(response)))


def _concise(response: str, words: list[str], claims: list[Claim]) -> float:
    if not claims:
        return 0.0
    padding = len(FILLER_MARKERS.findall(response)) + max(0, len(COURTESY.findall(response)) - MAX_COURTESY_PHRASES)
    overlength = max(0, len(words) - CONCISE_WORDS) / WORDS_PER_LENGTH_POINT
    return _clamp(1.0 - FILLER_PENALTY * padding - overlength)


def _fluency(response: str, words: list[str]) -> float:
    tokens = response.split()
    if not tokens or not words:
        return 0.0
    wordlike = sum(1 for t in tokens if re.search(r"[A-Za-z0-9]", t)) / len(tokens)
    factor = min(1.0, wordlike / 0.9)
    if len(words) >= 2:
        stutter = sum(1 for a, b in itertools.pairwise(words) if a == b) / (len(words) - 1)
        factor *= _clamp(1.0 - 4.0 * max(0.0, stutter - 0.05))
    if len(words) >= 4:
        trigrams = list(zip(words, words[1:], words[2:]))
        repeated = 1.0 - len(set(trigrams)) / len(trigrams)
        factor *= _clamp(1.0 - 3.0 * max(0.0, repeated - 0.1))
    if len(words) >= 10:
        top_share = max(words.count(w) for w in set(words)) / len(words)
        factor *= _clamp(1.0 - 3.0 * max(0.0, top_share - 0.25))
    return factor


def rubric_breakdown(prompt: str, response: str) -> dict[str, float]:
    """Each axis in [0, 1] plus `fluency` (the multiplier) and `total` (the gold score), rounded to 4 places."""
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise TypeError(
            f"gold rubric takes (prompt: str, response: str), got ({type(prompt).__name__}, {type(response).__name__})"
        )
    parsed = parse_prompt(prompt)
    claims = detect_claims(response)
    words = _WORD.findall(response.lower())
    axes = {
        "correct": _correct(parsed, response, claims),
        "on_intent": _on_intent(parsed, response, claims),
        "polite": _polite(parsed, response),
        "concise": _concise(response, words, claims),
    }
    fluency = _fluency(response, words)
    total = fluency * sum(WEIGHTS[k] * v for k, v in axes.items())
    return {**{k: round(v, 4) for k, v in axes.items()}, "fluency": round(fluency, 4), "total": round(total, 4)}


def gold_rubric(prompt: str, response: str) -> float:
    """Gold score of `response` to the raw `prompt` text, in [0, 1] (see the module docstring)."""
    return rubric_breakdown(prompt, response)["total"]
