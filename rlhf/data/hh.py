"""Import Anthropic HH-RLHF style preference pairs (``{"chosen": ..., "rejected": ...}`` transcripts).

Each transcript is ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``; the two transcripts of a row share the
conversation up to the last assistant turn. Conversion, per row:

1. Split each transcript into turns at ``"\\n\\nHuman:"`` / ``"\\n\\nAssistant:"`` (a role word that is not
   preceded by a blank line, such as ``"... Human: ..."`` inside a reply, stays text; such rows are counted
   as ``inline_role_marker``). Each turn's text goes through :func:`rlhf.data.prompts.normalize_text`
   (rows where it changes characters, not only whitespace, are counted as ``characters_normalised``) and
   then the optional scrubber.
2. The last turn must be the assistant's: it is the reply; the turns before it are the prompt. In the prompt,
   empty turns are dropped and consecutive turns of one role are joined with a blank line, so roles
   alternate user/assistant starting and ending with the user (``merged_turns`` counts such rows).
3. Rows are dropped (and counted by reason) when: the transcripts are identical (``identical_transcripts``);
   either has no final assistant turn (``missing_final_assistant``); the prompt cannot be made to start and
   end with a user turn (``malformed_turns``); the two prompts differ (``prompt_mismatch``); a reply is
   empty (``empty_reply``); or the two replies are equal after normalisation (``identical_replies``).

Output per kept row, text form: ``prompt`` is the rendered prompt ending with ``"\\n\\nAssistant:"``;
``chosen``/``rejected`` are the replies with one leading space, so ``prompt + chosen`` is the cleaned
transcript. Chat form: ``prompt_messages`` (user/assistant turns) and one-message
``chosen_messages``/``rejected_messages`` lists with role ``assistant``.

Structural problems (bad JSON, missing or non-string ``chosen``/``rejected``) stop the import with a
:class:`~rlhf.data.prompts.DataFormatError` naming the line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.data.pii import ScrubResult, run_scrubber
from rlhf.data.prompts import DataFormatError, iter_jsonl, normalize_text

__all__ = ["HHImportReport", "HHPair", "load_hh_pairs", "parse_transcript", "render_prompt"]

Message = dict[str, str]
_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
_LABEL = {"user": "Human", "assistant": "Assistant"}
_INLINE_ROLE = re.compile(r"\b(?:Human|Assistant):")


@dataclass(frozen=True)
class HHPair:
    """One preference pair in text and chat form, with the 1-based line it came from."""

    prompt: str
    chosen: str
    rejected: str
    prompt_messages: list[Message] = field(hash=False)
    chosen_messages: list[Message] = field(hash=False)
    rejected_messages: list[Message] = field(hash=False)
    source_line: int = 0

    def as_row(self) -> dict[str, Any]:
        """Plain dict with every field (lists copied), ready for ``datasets.Dataset.from_list``."""
        return {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "prompt_messages": [dict(m) for m in self.prompt_messages],
            "chosen_messages": [dict(m) for m in self.chosen_messages],
            "rejected_messages": [dict(m) for m in self.rejected_messages],
            "source_line": self.source_line,
        }


@dataclass
class HHImportReport:
    """An import's account: rows read and kept, lines dropped and kept-but-flagged by reason, PII replaced."""

    rows_read: int = 0
    pairs_kept: int = 0
    dropped_lines: dict[str, list[int]] = field(default_factory=dict)
    flagged_lines: dict[str, list[int]] = field(default_factory=dict)
    pii: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        """Counts only: rows read, pairs kept, drops and flags per reason, PII replacements per kind."""
        return {
            "rows_read": self.rows_read,
            "pairs_kept": self.pairs_kept,
            "dropped": {k: len(v) for k, v in sorted(self.dropped_lines.items())},
            "flagged": {k: len(v) for k, v in sorted(self.flagged_lines.items())},
            "pii_replaced": dict(sorted(self.pii.items())),
        }


def parse_transcript(text: str) -> list[tuple[str, str]]:
    """Split a transcript into (role, raw content) turns; roles are ``user``/``assistant``.

    Text before the first marker is returned as a turn with role ``""`` so callers can reject it.
    """
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _MARKER.split(text)
    turns: list[tuple[str, str]] = []
    if parts[0].strip():
        turns.append(("", parts[0]))
    for label, content in zip(parts[1::2], parts[2::2]):
        turns.append((_ROLE[label], content))
    return turns


def render_prompt(messages: list[Message]) -> str:
    """HH text form of prompt messages, ending with ``"\\n\\nAssistant:"``."""
    return "".join(f"\n\n{_LABEL[m['role']]}: {m['content']}" for m in messages) + "\n\nAssistant:"


class _Drop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _clean_turns(raw: list[tuple[str, str]], scrub: Callable[[str], str], flags: set[str]) -> tuple[list[Message], str]:
    """Cleaned prompt messages and the final reply of one transcript, or raise _Drop."""
    if not raw or raw[-1][0] != "assistant":
        raise _Drop("missing_final_assistant")
    if raw[0][0] == "":
        raise _Drop("malformed_turns")
    cleaned: list[tuple[str, str]] = []
    for role, content in raw:
        text = normalize_text(content)
        if text.split() != content.split():
            flags.add("characters_normalised")
        if _INLINE_ROLE.search(text):
            flags.add("inline_role_marker")
        cleaned.append((role, scrub(text) if text else text))
    *prompt_turns, (_, reply) = cleaned
    messages: list[Message] = []
    for role, content in prompt_turns:
        if not content:
            flags.add("merged_turns")
        elif messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
            flags.add("merged_turns")
        else:
            messages.append({"role": role, "content": content})
    if not messages or messages[0]["role"] != "user" or messages[-1]["role"] != "user":
        raise _Drop("malformed_turns")
    return messages, reply


def _convert(chosen: str, rejected: str, line: int, scrub: Callable[[str], str], flags: set[str]) -> HHPair:
    if chosen == rejected:
        raise _Drop("identical_transcripts")
    prompt_messages, chosen_reply = _clean_turns(parse_transcript(chosen), scrub, flags)
    rejected_prompt, rejected_reply = _clean_turns(parse_transcript(rejected), scrub, flags)
    if prompt_messages != rejected_prompt:
        raise _Drop("prompt_mismatch")
    if not chosen_reply or not rejected_reply:
        raise _Drop("empty_reply")
    if chosen_reply == rejected_reply:
        raise _Drop("identical_replies")
    return HHPair(
        prompt=render_prompt(prompt_messages),
        chosen=" " + chosen_reply,
        rejected=" " + rejected_reply,
        prompt_messages=prompt_messages,
        chosen_messages=[{"role": "assistant", "content": chosen_reply}],
        rejected_messages=[{"role": "assistant", "content": rejected_reply}],
        source_line=line,
    )


def load_hh_pairs(
    path: str | Path, scrubber: Callable[[str], ScrubResult | str] | None = None
) -> tuple[list[HHPair], HHImportReport]:
    """Convert every row of an HH-RLHF ``.jsonl``/``.jsonl.gz`` file; return kept pairs and the report."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"HH-RLHF file {path} does not exist; check the path")
    if not path.name.endswith((".jsonl", ".jsonl.gz")):
        raise DataFormatError(f"{path}: expected a .jsonl or .jsonl.gz file of chosen/rejected transcripts")
    report = HHImportReport()

    def scrub(text: str) -> str:
        if scrubber is None:
            return text
        result = run_scrubber(scrubber, text)
        report.pii.update(result.counts)
        return result.text

    pairs: list[HHPair] = []
    for line, obj in iter_jsonl(path):
        report.rows_read += 1
        for key in ("chosen", "rejected"):
            if key not in obj:
                fields = ", ".join(repr(k) for k in obj) or "none"
                raise DataFormatError(f"{path}:line {line}: no field '{key}' (available: {fields}); not HH-RLHF data")
            if not isinstance(obj[key], str):
                raise DataFormatError(
                    f"{path}:line {line}: field '{key}' must be a string transcript, got {type(obj[key]).__name__}"
                )
        flags: set[str] = set()
        try:
            pairs.append(_convert(obj["chosen"], obj["rejected"], line, scrub, flags))
        except _Drop as drop:
            report.dropped_lines.setdefault(drop.reason, []).append(line)
            continue
        for flag in sorted(flags):
            report.flagged_lines.setdefault(flag, []).append(line)
    report.pairs_kept = len(pairs)
    if report.rows_read == 0:
        raise DataFormatError(f"{path}: no rows found; expected one JSON object per line")
    return pairs, report
