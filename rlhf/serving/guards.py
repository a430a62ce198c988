"""Guardrail checks, each a ``module:function`` that takes a text and returns the flag names it raises.
The defaults flag likely prompt injection in a user's message and personal data in a reply (the store's PII
scrubber finds it; what is stored is scrubbed either way). Flags are counted in monitoring; the names listed in
``guards.block_flags`` refuse the request instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rlhf.core.errors import UserError
from rlhf.data.pii import default_scrubber
from rlhf.utils.callables import load_callable

__all__ = ["load_checks", "pii_in_reply", "prompt_injection", "run_checks"]

Check = Callable[[str], list[str]]

_INJECTION = re.compile(
    r"ignore (all |any )?(the |your )?(previous|prior|above) (instructions|rules|prompts?)|"
    r"disregard (the |your )?(system|previous) (prompt|instructions)|you are now (in )?(dan|developer mode)|"
    r"reveal (the |your )?(system prompt|hidden instructions)|<\|im_start\|>|<\|system\|>", re.IGNORECASE)


def prompt_injection(text: str) -> list[str]:
    """``prompt_injection`` when the message tries to override the assistant's instructions or smuggles
    chat-template tokens."""
    return ["prompt_injection"] if _INJECTION.search(text) else []


def pii_in_reply(text: str) -> list[str]:
    """``pii_in_reply`` when the default scrubber would replace anything in the reply."""
    return ["pii_in_reply"] if default_scrubber(text).counts else []


def load_checks(specs: list[str]) -> list[tuple[str, Check]]:
    """Import every ``module:function``; a bad spec fails in one line naming it."""
    out = []
    for spec in specs:
        try:
            out.append((spec, load_callable(spec)))
        except UserError as err:
            raise UserError(f"guard check {spec!r} cannot be loaded ({err}); fix the module:function "
                            "(e.g. rlhf.serving.guards:prompt_injection)") from None
    return out


def run_checks(checks: list[tuple[str, Check]], text: str) -> list[str]:
    """Every flag raised by every check, sorted and unique; a check that returns something other than a
    list of names is a bug of that check, reported with its spec."""
    flags: set[str] = set()
    for spec, fn in checks:
        raised = fn(text)
        if not isinstance(raised, (list, tuple, set)) or not all(isinstance(f, str) for f in raised):
            raise TypeError(f"guard check {spec} returned {raised!r}; it must return a list of flag names")
        flags.update(raised)
    return sorted(flags)
