"""Honeypots: records with a known best order, mixed into a round to score annotators.

A honeypot looks like every other record in Argilla (same fields, a content-hash key, a prompt id of the
same shape); whether a record is one, and its answer, are kept only in the push's slot map. The quality
report scores each annotator on them (the share of the honeypot's non-tied pairs ordered as the answer
orders them, :func:`rlhf.preferences.quality.quality_report`); their votes never become training pairs.

Two sources:

* a JSONL file, one honeypot per line: ``{"prompt": str, "responses": [{"text": str, "rank": int}, ...]}``
  with exactly K responses (the template's slots), rank 1 the best, equal ranks for ties;
* the demo world (:func:`demo_honeypots`): prompts from a seed range of their own (``seed + 20_000``, apart
  from candidate and SFT prompts); for each, replies of random quality are written until K of them have
  rubric scores at least ``min_gap`` apart; the answer is the rubric's order. A clear gap is what makes
  a honeypot fair: an attentive annotator can always tell the responses apart.

The rubric (``honeypots.rubric``, :func:`load_rubric`) must be the one the annotators follow: the demo
world's gold rubric by default, the team's own guidelines otherwise (in simulation, the bots'
``label_simulate.rubric``). Honeypots ordered by another rubric make every attentive annotator fail them.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhf.core.errors import UserError
from rlhf.data.candidates import candidate_id
from rlhf.data.pii import ScrubResult, run_scrubber
from rlhf.labeling.loop.slots import SlotRecord, record_key, shuffle_slots
from rlhf.utils.callables import load_callable

__all__ = ["DEMO_SEED_OFFSET", "Honeypot", "demo_honeypots", "honeypot_records", "load_honeypots", "load_rubric"]

DEMO_SEED_OFFSET = 20_000
DRAWS_PER_PROMPT = 60


@dataclass(frozen=True)
class Honeypot:
    """A prompt, K response texts and the known rank of each (1 best; equal ranks are ties)."""

    prompt: str
    texts: tuple[str, ...]
    ranks: tuple[int, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.ranks) or len(self.texts) < 2:
            raise ValueError(f"honeypot from {self.source} needs as many ranks as texts, at least 2")
        if len(set(self.texts)) != len(self.texts):
            raise ValueError(f"honeypot from {self.source} repeats a response text")
        if len(set(self.ranks)) < 2:
            raise ValueError(f"honeypot from {self.source} ranks every response equal; it can score nobody")


def load_honeypots(path: str | Path, k: int) -> list[Honeypot]:
    """Honeypots from a JSONL file (format in the module docstring), each with exactly ``k`` responses."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"honeypot file {path} does not exist; give a JSONL file or set honeypots.path=null")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:line {number}"
        try:
            row = json.loads(line)
            responses = row["responses"]
            texts = tuple(str(r["text"]) for r in responses)
            ranks = tuple(int(r["rank"]) for r in responses)
            prompt = str(row["prompt"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UserError(f"{where}: expected {{\"prompt\": str, \"responses\": [{{\"text\": str, \"rank\": int}}, "
                            "...]}}") from None
        if len(texts) != k:
            raise UserError(f"{where}: {len(texts)} responses, but the template has {k} slots; give exactly {k}")
        try:
            out.append(Honeypot(prompt, texts, ranks, where))
        except ValueError as err:
            raise UserError(str(err)) from None
    if not out:
        raise UserError(f"honeypot file {path} holds no honeypots")
    return out


def _spaced(scored: list[tuple[float, str]], k: int, min_gap: float) -> list[tuple[float, str]] | None:
    """``k`` items, best first, whose scores are pairwise at least ``min_gap`` apart (greedy from the top)."""
    picked: list[tuple[float, str]] = []
    for score, text in sorted(scored, reverse=True):
        if not picked or picked[-1][0] - score >= min_gap:
            picked.append((score, text))
        if len(picked) == k:
            return picked
    return None


def load_rubric(spec: str, key: str = "honeypots.rubric") -> Callable[[str, str], float]:
    """The rubric ``module:function`` named by config key ``key``; a one-line error naming the key otherwise."""
    try:
        return load_callable(spec)
    except UserError as err:
        raise UserError(f"{key}: {err}; set {key} to a module:function (prompt, reply) -> score, "
                        "e.g. rlhf.world.demo:gold_rubric") from None


def _score(rubric: Callable[[str, str], float], prompt: str, text: str) -> float:
    value = rubric(prompt, text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        name = getattr(rubric, "__qualname__", repr(rubric))
        raise UserError(f"honeypots.rubric {name} returned {type(value).__name__}, not a number; "
                        "a rubric maps (prompt, reply) to a score")
    return float(value)


def demo_honeypots(n: int, k: int, seed: int, min_gap: float = 0.15,
                   rubric: Callable[[str, str], float] | None = None) -> list[Honeypot]:
    """``n`` demo-world honeypots with ``k`` responses each, ordered by ``rubric`` (default: the gold rubric)."""
    from rlhf.world.demo import ResponseQuality, generate_prompts, generate_response, gold_rubric

    score = rubric or gold_rubric
    rng = random.Random(f"honeypots:{seed}")
    out: list[Honeypot] = []
    for prompt in generate_prompts(4 * n + 8, seed + DEMO_SEED_OFFSET):
        seen: dict[str, float] = {}
        for _ in range(DRAWS_PER_PROMPT):
            text = generate_response(prompt, ResponseQuality.draw(rng, 0.5), rng)
            if text not in seen:
                seen[text] = _score(score, prompt.text, text)
        picked = _spaced([(s, t) for t, s in seen.items()], k, min_gap)
        if picked is None:
            continue
        texts = [t for _, t in picked]
        order = list(range(k))
        rng.shuffle(order)  # the file order carries no hint; slots are shuffled again at push
        out.append(Honeypot(prompt.text, tuple(texts[i] for i in order), tuple(i + 1 for i in order),
                            f"demo world (seed {seed})"))
        if len(out) == n:
            return out
    raise UserError(f"the demo world gave only {len(out)} of {n} honeypots with rubric-score gaps of {min_gap}; "
                    "lower honeypots.min_gap (on honeypots.rubric's scale) or ask for fewer")


def honeypot_records(honeypots: Sequence[Honeypot], seed: int,
                     scrub: Callable[[str], ScrubResult | str]) -> list[SlotRecord]:
    """Slot-map records of the honeypots (texts scrubbed like every other record; slots shuffled)."""
    records = []
    for pot in honeypots:
        prompt = run_scrubber(scrub, pot.prompt).text
        prompt_id = hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:12]
        texts = [run_scrubber(scrub, t).text for t in pot.texts]
        ids = [candidate_id(prompt_id, t) for t in texts]
        if len(set(ids)) != len(ids):
            raise UserError(f"honeypot from {pot.source}: two responses are equal after PII scrubbing; change one")
        key = record_key(prompt, texts)
        records.append(SlotRecord(
            external_id=key, prompt_id=prompt_id, prompt=prompt, slots=shuffle_slots(ids, seed, key),
            texts=dict(zip(ids, texts)), honeypot=True, answer=dict(zip(ids, pot.ranks)),
            candidates={cid: {"source": pot.source} for cid in ids},
        ))
    return records
