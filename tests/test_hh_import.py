"""HH-RLHF import: the real 2,312-row file and a synthetic file with every kind of messy row."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rlhf.data.hh import load_hh_pairs, parse_transcript, render_prompt
from rlhf.data.pii import default_scrubber
from rlhf.data.prompts import DataFormatError
from tests.conftest import SHARED_DATA_ENV, shared_data_file


def _alternates(messages: list[dict[str, str]]) -> bool:
    expected = ["user", "assistant"] * len(messages)
    return [m["role"] for m in messages] == expected[: len(messages)] and messages[-1]["role"] == "user"


@pytest.fixture(scope="module")
def real_import(hh_harmless_test_file):
    with gzip.open(hh_harmless_test_file, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    pairs, report = load_hh_pairs(hh_harmless_test_file)
    return rows, pairs, report


def test_real_file_every_row_accounted_for(real_import) -> None:
    rows, pairs, report = real_import
    summary = report.summary()
    assert len(rows) == 2312 and summary["rows_read"] == 2312
    assert summary["pairs_kept"] == len(pairs) == 2312 - sum(summary["dropped"].values())
    assert summary["dropped"] == {"empty_reply": 4, "malformed_turns": 5}
    assert summary["flagged"] == {"characters_normalised": 1, "inline_role_marker": 45, "merged_turns": 4}
    for line in report.dropped_lines["empty_reply"]:
        replies = [parse_transcript(rows[line - 1][k])[-1][1] for k in ("chosen", "rejected")]
        assert any(not r.strip() for r in replies)
    kept_lines = {p.source_line for p in pairs}
    dropped = {line for lines in report.dropped_lines.values() for line in lines}
    assert kept_lines.isdisjoint(dropped) and kept_lines | dropped == set(range(1, 2313))


def test_real_file_known_row(real_import) -> None:
    rows, pairs, _ = real_import
    pair = pairs[0]
    assert pair.source_line == 1
    assert pair.chosen == (
        " No, sorry! All of these involve a pen, the point is that you can get funny results by doing pranks with pens."
    )
    assert pair.rejected.startswith(" There are lots of funny things you can do with pens, here’s one example:")
    assert pair.prompt.startswith("\n\nHuman: what are some pranks with a pen i can do?\n\nAssistant: Are you looking")
    assert pair.prompt.endswith("\n\nHuman: okay some of these do not have anything to do with pens\n\nAssistant:")
    assert [m["role"] for m in pair.prompt_messages] == ["user", "assistant", "user", "assistant", "user"]
    assert pair.prompt_messages[2] == {"role": "user", "content": "yep"}
    assert pair.chosen_messages == [{"role": "assistant", "content": pair.chosen[1:]}]
    assert pair.rejected_messages == [{"role": "assistant", "content": pair.rejected[1:]}]
    # The original transcript, up to runs of spaces, is prompt + chosen.
    assert (pair.prompt + pair.chosen).split() == rows[0]["chosen"].split()


def test_real_file_every_pair_is_well_formed(real_import) -> None:
    rows, pairs, report = real_import
    repaired = set(report.flagged_lines["merged_turns"]) | set(report.flagged_lines["characters_normalised"])
    for pair in pairs:
        assert _alternates(pair.prompt_messages), pair.source_line
        assert all(m["content"] for m in pair.prompt_messages)
        assert pair.prompt == render_prompt(pair.prompt_messages) and pair.prompt.endswith("\n\nAssistant:")
        for text, messages in ((pair.chosen, pair.chosen_messages), (pair.rejected, pair.rejected_messages)):
            assert len(messages) == 1 and messages[0]["role"] == "assistant" and text == " " + messages[0]["content"]
        assert pair.chosen != pair.rejected
        raw = rows[pair.source_line - 1]
        same = (pair.prompt + pair.chosen).split() == raw["chosen"].split() and (
            pair.prompt + pair.rejected
        ).split() == raw["rejected"].split()
        assert same == (pair.source_line not in repaired), pair.source_line
    merged = next(p for p in pairs if p.source_line == 764)
    assert [m["role"] for m in merged.prompt_messages] == ["user", "assistant", "user"]
    assert "\n\n" in merged.prompt_messages[1]["content"]


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_messy_rows_are_dropped_or_repaired_and_counted(tmp_path: Path) -> None:
    good = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
    rows = [
        good,  # 1 kept
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: b"},  # 2 identical
        {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "rejected": "\n\nHuman: a\n\nAssistant: d"},  # 3
        {"chosen": "\n\nHuman: a\n\nAssistant:  ", "rejected": "\n\nHuman: a\n\nAssistant: d"},  # 4 empty reply
        {"chosen": "\n\nHuman: a\n\nAssistant: same ", "rejected": "\n\nHuman: a\n\nAssistant: same"},  # 5
        {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"},  # 6 mismatch
        {"chosen": "preamble\n\nHuman: a\n\nAssistant: x", "rejected": "preamble\n\nHuman: a\n\nAssistant: y"},  # 7
        {  # 8 kept: consecutive human turns merged, inline role word, odd characters cleaned
            "chosen": "Human: q1\n\nHuman: q2 \u200b\x07caf\u00e9\n\nAssistant: Sure. Human: what? ok",
            "rejected": "Human: q1\n\nHuman: q2 \u200b\x07caf\u00e9\n\nAssistant: No\ufeff.",
        },
        {
            "chosen": "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c",
            "rejected": "\n\nHuman: a\n\nAssistant: b\n\nAssistant: d",
        },  # 9
    ]
    pairs, report = load_hh_pairs(_write(tmp_path / "messy.jsonl", rows))
    assert report.dropped_lines == {
        "identical_transcripts": [2],
        "missing_final_assistant": [3],
        "empty_reply": [4],
        "identical_replies": [5],
        "prompt_mismatch": [6],
        "malformed_turns": [7, 9],
    }
    assert [p.source_line for p in pairs] == [1, 8]
    assert report.flagged_lines == {"characters_normalised": [8], "inline_role_marker": [8], "merged_turns": [8]}
    repaired = pairs[1]
    assert repaired.prompt_messages == [{"role": "user", "content": "q1\n\nq2 café"}]
    assert repaired.prompt == "\n\nHuman: q1\n\nq2 café\n\nAssistant:"
    assert repaired.chosen == " Sure. Human: what? ok" and repaired.rejected == " No."
    assert report.summary()["rows_read"] == 9 and report.summary()["pairs_kept"] == 2


def test_scrubber_applies_to_every_turn(tmp_path: Path) -> None:
    row = {
        "chosen": "\n\nHuman: my email is jo@example.com\n\nAssistant: Call (555) 123-4567.",
        "rejected": "\n\nHuman: my email is jo@example.com\n\nAssistant: Write to jo@example.com.",
    }
    pairs, report = load_hh_pairs(_write(tmp_path / "pii.jsonl", [row]), scrubber=default_scrubber)
    assert pairs[0].prompt_messages == [{"role": "user", "content": "my email is [EMAIL]"}]
    assert pairs[0].chosen == " Call [PHONE]." and pairs[0].rejected == " Write to [EMAIL]."
    assert report.summary()["pii_replaced"] == {"EMAIL": 3, "PHONE": 1}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"chosen": "x", "rejected": "y"}', '{"chosen": "x",'], r"bad\.jsonl:line 2: malformed JSON"),
        (
            ['{"chosen": "x", "rejected": "y"}', '{"chosen": "x", "other": 1}'],
            r"bad\.jsonl:line 2: no field 'rejected' \(available: 'chosen', 'other'\)",
        ),
        (['{"chosen": 5, "rejected": "y"}'], r"bad\.jsonl:line 1: field 'chosen' must be a string transcript, got int"),
    ],
)
def test_structural_errors_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(DataFormatError, match=message):
        load_hh_pairs(_write(tmp_path / "bad.jsonl", lines))


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_hh_pairs(tmp_path / "nope.jsonl.gz")
    (tmp_path / "x.csv").write_text("chosen,rejected\n")
    with pytest.raises(DataFormatError, match=r"expected a \.jsonl or \.jsonl\.gz"):
        load_hh_pairs(tmp_path / "x.csv")


def test_a_missing_shared_data_file_fails_in_one_line_naming_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    (tmp_path / "present.jsonl").write_text("{}\n")
    assert shared_data_file("present.jsonl") == tmp_path / "present.jsonl"
    with pytest.raises(pytest.fail.Exception) as failure:
        shared_data_file("absent.jsonl.gz")
    message = str(failure.value)
    assert message.startswith(f"shared data file {tmp_path / 'absent.jsonl.gz'} is missing ({SHARED_DATA_ENV}=")
    assert f"set {SHARED_DATA_ENV} to the folder that holds absent.jsonl.gz" in message and "\n" not in message
    monkeypatch.delenv(SHARED_DATA_ENV)
    with pytest.raises(pytest.fail.Exception, match="unset, so shared/data beside the checkout"):
        shared_data_file("absent.jsonl.gz")
