"""Implicit feedback derived from the conversation itself, as pure functions: which conversation a request
continues, whether the user's new message re-asks an earlier one (a rephrase: the last reply did not
answer), and whether it asks for a human. OpenAI-style clients send the whole history with every request, so
none of this needs client cooperation.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["asks_for_human", "conversation_id", "is_rephrase", "reask_share", "user_turns"]

_WORD = re.compile(r"[a-z0-9']+")
_HUMAN = re.compile(
    r"\b(talk|speak|chat|connect|transfer|put)\b[^.?!]{0,30}\b(human|person|agent|someone|representative|operator|"
    r"manager|real)\b|\bhuman (agent|please)\b|\bescalat", re.IGNORECASE)
# Short function words say nothing about whether two messages ask the same thing.
_STOP = frozenset(("a", "an", "the", "i", "my", "me", "to", "is", "it", "of", "and", "or", "for", "on", "in", "at",
                   "you", "your", "can", "could", "would", "please", "do", "does", "what", "how", "when", "where",
                   "why", "with", "this", "that", "be", "am", "are", "was"))


def user_turns(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in messages if m.get("role") == "user"]


def conversation_id(user: str | None, messages: list[dict[str, str]], given: str | None = None) -> str:
    """The client's conversation id when it sends one, else a hash of the user and the first user message
    (stable across the turns of one conversation, since every request repeats the history)."""
    if given:
        return hashlib.sha256(f"given:{user}:{given}".encode()).hexdigest()[:32]
    first = next(iter(user_turns(messages)), "")
    return hashlib.sha256(f"derived:{user}:{first}".encode()).hexdigest()[:32]


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def reask_share(earlier: str, current: str) -> float:
    """The share of an earlier message's content words (function words left out) that ``current`` repeats;
    0 when the earlier message has fewer than two (a "thanks" is not a question to re-ask)."""
    words = _content_words(earlier)
    if len(words) < 2:
        return 0.0
    return len(words & _content_words(current)) / len(words)


def is_rephrase(earlier_turns: list[str], current: str, threshold: float) -> bool:
    """The user asks again something they asked earlier in the conversation: ``current`` repeats at least
    ``threshold`` of some earlier message's content words."""
    return any(reask_share(earlier, current) >= threshold for earlier in earlier_turns)


def asks_for_human(text: str) -> bool:
    """The message asks to be handed to a person ("can I talk to a human", "escalate this")."""
    return bool(_HUMAN.search(text))
