"""Pairs snapshots: reader errors name the line, round trip, prompt-level split, demo annotators, HH import."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rlhf.core.errors import UserError
from rlhf.data.pairs import (
    PAIRS_FILE,
    PreferencePair,
    best_vs_worst,
    demo_pairs,
    pairs_from_hh,
    read_pairs,
    split_pairs,
    text_id,
    write_pairs,
)
from rlhf.world.demo import gold_rubric


def _row(**overrides) -> dict:
    row = {"prompt": "Where is order 12345?", "chosen": "It ships today.", "rejected": "No idea.",
           "agreement": 0.75, "margin": 0.4, "prompt_id": "p1", "chosen_id": "c1", "rejected_id": "r1",
           "provenance": {"annotators": ["a", "b", "c", "d"]}}
    row.update(overrides)
    return row


def _write(folder: Path, rows: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PAIRS_FILE).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return folder


def test_read_pairs_parses_every_field(tmp_path):
    folder = _write(tmp_path / "snap", [_row(), _row(prompt_id="p2", split="eval")])
    pairs = read_pairs(folder)
    assert len(pairs) == 2
    first = pairs[0]
    assert (first.prompt, first.chosen, first.rejected) == ("Where is order 12345?", "It ships today.", "No idea.")
    assert (first.agreement, first.margin, first.split) == (0.75, 0.4, None)
    assert first.provenance == {"annotators": ["a", "b", "c", "d"]}
    assert pairs[1].split == "eval"
    assert read_pairs(folder / PAIRS_FILE) == pairs  # the file itself works too


@pytest.mark.parametrize(("override", "needle"), [
    ({"agreement": 0.5}, "'agreement' must be in (0.5, 1]"),
    ({"agreement": 1.2}, "'agreement' must be in (0.5, 1]"),
    ({"agreement": "high"}, "'agreement' must be a finite number"),
    ({"margin": -0.1}, "'margin' must be >= 0"),
    ({"chosen": ""}, "'chosen' must be a non-empty string"),
    ({"prompt_id": None}, "'prompt_id' must be a non-empty string"),
    ({"split": "test"}, "'split' must be one of train, eval"),
    ({"provenance": [1]}, "'provenance' must be an object"),
    ({"rejected": "It ships today."}, "same text"),
    ({"prompt_messages": [{"role": "user", "content": "other"}]}, "must end with a user turn equal to 'prompt'"),
])
def test_bad_rows_name_the_line(tmp_path, override, needle):
    folder = _write(tmp_path / "snap", [_row(), _row(**override)])
    with pytest.raises(UserError) as err:
        read_pairs(folder)
    message = str(err.value)
    assert f"{PAIRS_FILE}:line 2" in message and needle in message and "\n" not in message


def test_malformed_json_and_missing_snapshot(tmp_path):
    folder = _write(tmp_path / "snap", [_row(), "{not json"])
    with pytest.raises(UserError, match="line 2: malformed JSON"):
        read_pairs(folder)
    with pytest.raises(FileNotFoundError, match="pairs snapshot folder"):
        read_pairs(tmp_path / "nowhere")
    with pytest.raises(UserError, match="holds no pairs"):
        read_pairs(_write(tmp_path / "empty", []))


def test_write_then_read_round_trips_multi_turn(tmp_path):
    pair = PreferencePair(prompt="And the refund?", chosen="Five days.", rejected="Never.", agreement=1.0,
                          margin=0.0, prompt_id="p", chosen_id="c", rejected_id="r", provenance={"src": "x"},
                          split="train", prompt_messages=(("user", "Hi"), ("assistant", "Hello!"),
                                                          ("user", "And the refund?")))
    write_pairs(tmp_path / "snap", [pair])
    back = read_pairs(tmp_path / "snap")
    assert back == [pair] and back[0].provenance == {"src": "x"}
    assert back[0].conversation()[1] == {"role": "assistant", "content": "Hello!"}


def test_split_keeps_prompts_together_and_respects_fixed_split():
    pairs = demo_pairs(60, 3, seed=1)
    train, held = split_pairs(pairs, 0.25, seed=0)
    assert len(train) + len(held) == len(pairs) and held and train
    assert not {p.prompt_id for p in train} & {p.prompt_id for p in held}
    fixed = [PreferencePair(**{**p.__dict__, "split": "eval"}) for p in pairs[:3]]
    _, held_fixed = split_pairs(fixed, 0.0, seed=0)
    assert held_fixed == fixed


def test_demo_pairs_follow_the_gold_rubric_without_noise():
    pairs = demo_pairs(30, 4, seed=3)
    assert pairs and all(p.agreement == 1.0 for p in pairs)
    for p in pairs:
        gold_c, gold_r = gold_rubric(p.prompt, p.chosen), gold_rubric(p.prompt, p.rejected)
        assert gold_c > gold_r
        assert p.margin == pytest.approx(gold_c - gold_r)
        assert p.chosen_id == text_id(p.chosen)
    assert len(pairs) <= 30 * 6  # C(4, 2) per prompt, ties dropped
    assert demo_pairs(30, 4, seed=3) == pairs  # deterministic


def test_demo_pairs_noise_lowers_agreement_and_majority_rules():
    noisy = demo_pairs(80, 4, seed=0, annotators=5, noise=0.15)
    agreements = {p.agreement for p in noisy}
    assert agreements <= {0.6, 0.8, 1.0} and agreements - {1.0}
    flipped = sum(gold_rubric(p.prompt, p.chosen) < gold_rubric(p.prompt, p.rejected) for p in noisy)
    assert 0 < flipped < len(noisy) / 4


def test_pairs_from_hh_converts_turns(tmp_path):
    rows = [
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help me?\n\nAssistant: Sure, how?",
         "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help me?\n\nAssistant: No."},
        {"chosen": "\n\nHuman: Single?\n\nAssistant: Yes.", "rejected": "\n\nHuman: Single?\n\nAssistant: No."},
    ]
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    pairs, summary = pairs_from_hh(path)
    assert summary["pairs_kept"] == 2
    multi, single = pairs
    assert (multi.prompt, multi.chosen, multi.rejected) == ("Help me?", "Sure, how?", "No.")
    assert [m["role"] for m in multi.conversation()] == ["user", "assistant", "user"]
    assert single.prompt_messages is None and single.conversation() == [{"role": "user", "content": "Single?"}]
    assert multi.agreement == 1.0 and multi.provenance["line"] == 1


def _ranked(prompt_id: str, order: list[str]) -> list[PreferencePair]:
    """Every pair of one prompt's replies, ranked ``order`` (best first)."""
    return [PreferencePair(prompt=f"q{prompt_id}", chosen=a, rejected=b, agreement=1.0, margin=0.0, prompt_id=prompt_id, chosen_id=a,
                           rejected_id=b) for i, a in enumerate(order) for b in order[i + 1:]]


def test_best_vs_worst_keeps_each_prompts_best_over_its_worst():
    pairs = _ranked("p1", ["c", "a", "d", "b"]) + _ranked("p2", ["y", "x"])
    kept = best_vs_worst(pairs[::-1])
    assert {(p.prompt_id, p.chosen_id, p.rejected_id) for p in kept} == {("p1", "c", "b"), ("p2", "y", "x")}


def test_best_vs_worst_uses_copeland_scores_when_a_pair_is_missing():
    # a-d was a tie, so that pair is absent: a is best (2 wins), d worst; among a's pairs, c is the lower
    pairs = [PreferencePair(prompt="q", chosen=w, rejected=l, agreement=1.0, margin=0.0, prompt_id="p",
                           chosen_id=w, rejected_id=l)
             for w, l in [("a", "b"), ("a", "c"), ("b", "c"), ("b", "d"), ("c", "d")]]
    kept = best_vs_worst(pairs)
    assert [(p.chosen_id, p.rejected_id) for p in kept] == [("a", "c")]
