"""Preference-pair snapshots: the typed pair, the ``pairs.jsonl`` reader and writer, a demo-world generator.

A pairs snapshot is a folder holding ``pairs.jsonl``, one JSON object per training pair:

* ``prompt`` (str): the user message text; ``chosen`` / ``rejected`` (str): the two reply texts;
* ``agreement`` (float in (0.5, 1]): share of annotators who preferred ``chosen``;
* ``margin`` (float >= 0): preference strength (its scale is the producer's; 0 when unknown);
* ``prompt_id``, ``chosen_id``, ``rejected_id`` (non-empty str): stable ids of the prompt and both replies;
* ``provenance`` (object): free-form origin (annotators, snapshot, source file and line, ...);
* optional ``split`` (``"train"`` or ``"eval"``): a fixed assignment that overrides the hash split;
* optional ``prompt_messages`` (list of ``{"role", "content"}``): the whole conversation before the reply
  when it has several turns; it must end with a user turn whose content equals ``prompt``.

:func:`demo_pairs` simulates the annotation loop on the demo world: for each prompt, ``k`` candidates are
written by :func:`rlhf.world.demo.generate_response` with independently random quality axes; each of
``annotators`` honest annotators scores every candidate by the gold rubric plus Gaussian noise of standard
deviation ``noise`` and ranks them (equal scores are a tie). Every pair of candidates becomes one vote per
annotator; the majority side wins, ``agreement`` is the majority's share of all annotators (tie votes count
against it) and pairs at or below 0.5 are dropped (ties); ``margin`` is the mean perceived score difference
in the majority's direction, floored at 0.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhf.core.artifacts import atomic_write_text
from rlhf.core.errors import UserError

__all__ = [
    "PAIRS_FILE", "PreferencePair", "best_vs_worst",
    "demo_pairs", "pairs_from_hh", "read_pairs", "split_pairs", "text_id", "write_pairs",
]

PAIRS_FILE = "pairs.jsonl"
SPLITS = ("train", "eval")
_REQUIRED_TEXT = ("prompt", "chosen", "rejected", "prompt_id", "chosen_id", "rejected_id")


@dataclass(frozen=True)
class PreferencePair:
    """One training pair: ``chosen`` was preferred to ``rejected`` as a reply to ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    agreement: float
    margin: float
    prompt_id: str
    chosen_id: str
    rejected_id: str
    provenance: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    split: str | None = None
    prompt_messages: tuple[tuple[str, str], ...] | None = None

    def conversation(self) -> list[dict[str, str]]:
        """Chat messages before the reply (the whole context, or the single user message)."""
        if self.prompt_messages:
            return [{"role": role, "content": content} for role, content in self.prompt_messages]
        return [{"role": "user", "content": self.prompt}]

    def to_json(self) -> dict[str, Any]:
        """The ``pairs.jsonl`` object of this pair (optional keys only when set)."""
        row = asdict(self)
        if self.split is None:
            row.pop("split")
        if self.prompt_messages is None:
            row.pop("prompt_messages")
        else:
            row["prompt_messages"] = self.conversation()
        return row


def text_id(text: str) -> str:
    """A stable 16-hex-digit id of a text (SHA-256 prefix)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _pairs_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / PAIRS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a pairs snapshot folder holding {PAIRS_FILE}")
    return path


def _number(row: dict[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _messages(row: dict[str, Any], where: str) -> tuple[tuple[str, str], ...] | None:
    raw = row.get("prompt_messages")
    if raw is None:
        return None
    ok = isinstance(raw, list) and raw and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in raw)
    if not ok:
        raise UserError(f"{where}: 'prompt_messages' must be a non-empty list of {{'role', 'content'}} objects")
    if raw[-1]["role"] != "user" or raw[-1]["content"] != row["prompt"]:
        raise UserError(f"{where}: 'prompt_messages' must end with a user turn equal to 'prompt'")
    return tuple((m["role"], m["content"]) for m in raw)


def _parse(row: dict[str, Any], where: str) -> PreferencePair:
    for key in _REQUIRED_TEXT:
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise UserError(f"{where}: '{key}' must be a non-empty string")
    agreement = _number(row, "agreement", where)
    if not 0.5 < agreement <= 1.0:
        raise UserError(f"{where}: 'agreement' must be in (0.5, 1], got {agreement}; drop ties before writing pairs")
    margin = _number(row, "margin", where)
    if margin < 0:
        raise UserError(f"{where}: 'margin' must be >= 0, got {margin}; orient the pair so chosen is preferred")
    provenance = row.get("provenance", {})
    if not isinstance(provenance, dict):
        raise UserError(f"{where}: 'provenance' must be an object, got {type(provenance).__name__}")
    split = row.get("split")
    if split is not None and split not in SPLITS:
        raise UserError(f"{where}: 'split' must be one of {', '.join(SPLITS)} or absent, got {split!r}")
    if row["chosen"] == row["rejected"]:
        raise UserError(f"{where}: 'chosen' and 'rejected' are the same text; drop this pair")
    return PreferencePair(
        prompt=row["prompt"], chosen=row["chosen"], rejected=row["rejected"], agreement=agreement, margin=margin,
        prompt_id=row["prompt_id"], chosen_id=row["chosen_id"], rejected_id=row["rejected_id"],
        provenance=provenance, split=split, prompt_messages=_messages(row, where))


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Every pair of a snapshot folder (or a ``pairs.jsonl`` file); bad lines raise naming the line."""
    file = _pairs_file(path)
    pairs: list[PreferencePair] = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{file}:line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
            pairs.append(_parse(row, where))
    if not pairs:
        raise UserError(f"{file} holds no pairs; export annotations into it first")
    return pairs


def write_pairs(folder: str | Path, pairs: Iterable[PreferencePair]) -> Path:
    """Write ``pairs`` as ``<folder>/pairs.jsonl`` (atomically); returns the file."""
    text = "".join(json.dumps(p.to_json(), sort_keys=True) + "\n" for p in pairs)
    if not text:
        raise UserError("no pairs to write; a snapshot needs at least one pair")
    path = Path(folder) / PAIRS_FILE
    atomic_write_text(path, text)
    return path


def split_pairs(pairs: list[PreferencePair], eval_fraction: float, seed: int
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, eval): a pair's own ``split`` wins; otherwise a seeded hash of ``prompt_id`` decides, so all
    pairs of one prompt land on the same side."""
    if not 0.0 <= eval_fraction < 1.0:
        raise UserError(f"eval fraction must be in [0, 1), got {eval_fraction}")
    train, held = [], []
    for pair in pairs:
        side = pair.split
        if side is None:
            # Salted apart from the prepare stage's prompt split, which hashes the same ids with the same seed:
            # unsalted, every prompt that prepare kept for training would land on the training side here too.
            key = f"pairs-split:{seed}:{pair.prompt_id}"
            bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            side = "eval" if bucket < eval_fraction else "train"
        (held if side == "eval" else train).append(pair)
    return train, held


def _copeland(group: list[PreferencePair]) -> dict[str, tuple[int, int]]:
    """Each reply's (wins minus losses, minus losses) over one prompt's pairs."""
    wins: dict[str, int] = {}
    losses: dict[str, int] = {}
    for pair in group:
        wins[pair.chosen_id] = wins.get(pair.chosen_id, 0) + 1
        losses[pair.rejected_id] = losses.get(pair.rejected_id, 0) + 1
    return {r: (wins.get(r, 0) - losses.get(r, 0), -losses.get(r, 0)) for r in wins.keys() | losses.keys()}


def best_vs_worst(pairs: list[PreferencePair]) -> list[PreferencePair]:
    """Per prompt, the one pair of its best reply over its worst (the field's usual DPO choice).

    Replies are ordered by Copeland score over the prompt's pairs (wins minus losses, then fewer losses);
    the kept pair is the one whose chosen reply scores highest and whose rejected reply lowest, among the
    pairs the snapshot holds (remaining ties go to the smaller reply ids, so the choice is deterministic).
    """
    by_prompt: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        by_prompt.setdefault(pair.prompt_id, []).append(pair)
    kept = []
    for group in by_prompt.values():
        score = _copeland(group)
        kept.append(min(group, key=lambda p: (tuple(-x for x in score[p.chosen_id]), score[p.rejected_id],
                                              p.chosen_id, p.rejected_id)))
    return kept


def _votes(perceived: list[list[float]], i: int, j: int) -> tuple[int, int, int]:
    """(votes for i, votes for j, tie votes) over annotators."""
    for_i = sum(scores[i] > scores[j] for scores in perceived)
    for_j = sum(scores[j] > scores[i] for scores in perceived)
    return for_i, for_j, len(perceived) - for_i - for_j


def demo_pairs(n_prompts: int, k: int, seed: int, annotators: int = 3, noise: float = 0.0,
               good_fraction: float = 0.5) -> list[PreferencePair]:
    """Pairs from simulated honest annotators ranking ``k`` demo-world candidates per prompt (see module doc)."""
    from rlhf.world.demo import ResponseQuality, generate_prompts, generate_response, gold_rubric

    if n_prompts < 1 or k < 2 or annotators < 1 or noise < 0:
        raise UserError(f"demo pairs need n_prompts >= 1, k >= 2, annotators >= 1, noise >= 0 "
                        f"(got {n_prompts}, {k}, {annotators}, {noise})")
    rng = random.Random(f"demo-pairs:{seed}")
    pairs: list[PreferencePair] = []
    for prompt in generate_prompts(n_prompts, seed):
        texts: list[str] = []
        while len(texts) < k:
            text = generate_response(prompt, ResponseQuality.draw(rng, good_fraction), rng)
            if text not in texts:
                texts.append(text)
        gold = [gold_rubric(prompt.text, t) for t in texts]
        perceived = [[g + rng.gauss(0.0, noise) if noise else g for g in gold] for _ in range(annotators)]
        for i, j in itertools.combinations(range(k), 2):
            for_i, for_j, _ = _votes(perceived, i, j)
            if for_i == for_j or max(for_i, for_j) / annotators <= 0.5:
                continue
            win, lose = (i, j) if for_i > for_j else (j, i)
            strength = sum(s[win] - s[lose] for s in perceived) / annotators
            pairs.append(PreferencePair(
                prompt=prompt.text, chosen=texts[win], rejected=texts[lose],
                agreement=max(for_i, for_j) / annotators, margin=max(0.0, strength),
                prompt_id=prompt.id, chosen_id=text_id(texts[win]), rejected_id=text_id(texts[lose]),
                provenance={"source": "demo", "seed": seed, "annotators": annotators, "noise": noise,
                            "intent": prompt.intent, "gold_chosen": gold[win], "gold_rejected": gold[lose]},
            ))
    return pairs


def pairs_from_hh(path: str | Path) -> tuple[list[PreferencePair], dict[str, Any]]:
    """HH-RLHF transcripts (``.jsonl``/``.jsonl.gz``) as pairs, via :func:`rlhf.data.hh.load_hh_pairs`.

    One labeler per row, so ``agreement`` is 1 and ``margin`` 0; multi-turn contexts keep ``prompt_messages``.
    Returns the pairs and the import summary (rows read, kept, dropped by reason).
    """
    from rlhf.data.hh import load_hh_pairs

    hh, report = load_hh_pairs(path)
    pairs = []
    for item in hh:
        messages = tuple((m["role"], m["content"]) for m in item.prompt_messages)
        chosen = item.chosen_messages[0]["content"]
        rejected = item.rejected_messages[0]["content"]
        pairs.append(PreferencePair(
            prompt=messages[-1][1], chosen=chosen, rejected=rejected, agreement=1.0, margin=0.0,
            prompt_id=text_id(json.dumps(messages)), chosen_id=text_id(chosen), rejected_id=text_id(rejected),
            provenance={"source": "hh-rlhf", "file": Path(path).name, "line": item.source_line},
            prompt_messages=messages if len(messages) > 1 else None,
        ))
    if not pairs:
        raise UserError(f"{path}: no usable HH-RLHF pairs (import summary: {report.summary()})")
    return pairs, report.summary()
