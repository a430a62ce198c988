"""Prompt-set loading (schema errors name the line), normalisation, exact/near dedup, cluster-aware splits."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from rlhf.data.dedup import cluster_records, dedup_key, dedup_records, split_records
from rlhf.data.pii import default_scrubber
from rlhf.data.prompts import (
    DataFormatError,
    PromptRecord,
    load_prompt_records,
    normalize_text,
    prompt_id,
    scrub_records,
)


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _record(text: str, line: int = 0) -> PromptRecord:
    norm = normalize_text(text)
    return PromptRecord(id=prompt_id(norm), prompt=norm, metadata={}, source_line=line)


def _random_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 25))) for _ in range(n)]


# ---------------------------------------------------------------- normalisation


def test_normalize_text() -> None:
    raw = "  Hello\u00a0\u00a0world\t\tagain\r\n\r\n\r\n\r\nNext \u200bline\x00 \ufb01ne ＡＢＣ \u202eok\ue000 👍🏾  "
    assert normalize_text(raw) == "Hello world again\n\nNext line fine ABC ok 👍🏾"
    assert normalize_text("line one  \n   line two") == "line one\nline two"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert normalize_text(family) == family  # zero-width joiners inside emoji survive
    assert prompt_id("abc") == prompt_id(normalize_text("  abc ")) and len(prompt_id("abc")) == 16


# ---------------------------------------------------------------- loading


def test_load_jsonl_keeps_metadata_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"prompt": "  Where is   my order? ", "category": "shipping", "priority": 2}\n'
        "\n"
        '{"prompt": "Cancel it", "category": "billing"}\n',
        encoding="utf-8",
    )
    records = load_prompt_records(path)
    assert [r.prompt for r in records] == ["Where is my order?", "Cancel it"]
    assert [r.source_line for r in records] == [1, 3]
    assert records[0].metadata == {"category": "shipping", "priority": 2}
    assert records[0].id == prompt_id("Where is my order?")


def test_load_csv_with_multiline_field_reports_start_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('text,lang\n"first\nprompt, with comma",en\nsecond,de\n', encoding="utf-8")
    records = load_prompt_records(path, prompt_field="text")
    assert [(r.prompt, r.source_line, dict(r.metadata)) for r in records] == [
        ("first\nprompt, with comma", 2, {"lang": "en"}),
        ("second", 4, {"lang": "de"}),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text('text,lang\n"first\nprompt",en\n   ,de\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.csv:line 4: field 'text' is empty"):
        load_prompt_records(bad, prompt_field="text")


def test_load_parquet_and_saved_dataset(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a b", "c\u00a0d"], "score": [1.5, 2.0]}), tmp_path / "p.parquet")
    records = load_prompt_records(tmp_path / "p.parquet")
    assert [(r.prompt, r.source_line, dict(r.metadata)) for r in records] == [
        ("a b", 1, {"score": 1.5}),
        ("c d", 2, {"score": 2.0}),
    ]

    datasets.Dataset.from_dict({"question": ["x", "y"], "tag": ["t1", "t2"]}).save_to_disk(str(tmp_path / "ds"))
    records = load_prompt_records(tmp_path / "ds", prompt_field="question")
    assert [(r.prompt, dict(r.metadata)) for r in records] == [("x", {"tag": "t1"}), ("y", {"tag": "t2"})]

    pq.write_table(pa.table({"prompt": ["ok", None]}), tmp_path / "null.parquet")
    with pytest.raises(DataFormatError, match=r"null\.parquet:row 2: field 'prompt' is null"):
        load_prompt_records(tmp_path / "null.parquet")
    pq.write_table(pa.table({"prompt": [1, 2]}), tmp_path / "int.parquet")
    with pytest.raises(DataFormatError, match=r"int\.parquet:row 1: field 'prompt' must be a string, got int"):
        load_prompt_records(tmp_path / "int.parquet")

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["x"]})}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataFormatError, match=r"holds several splits \(train\)"):
        load_prompt_records(tmp_path / "dd")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"prompt": "ok"}\n{"text": "no prompt", "id": 3}\n',
            r"p\.jsonl:line 2: no field 'prompt' \(available: 'text', 'id'\)",
        ),
        (b'{"prompt": "ok"}\n{"prompt": "   \\t "}\n', r"p\.jsonl:line 2: field 'prompt' is empty or whitespace only"),
        (b'{"prompt": "ok"}\n\n{"prompt": ["a"]}\n', r"p\.jsonl:line 3: field 'prompt' must be a string, got list"),
        (b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', r"p\.jsonl:line 2: invalid UTF-8"),
        (b'{"prompt": "ok"}\n{"prompt": "unterminated}\n', r"p\.jsonl:line 2: malformed JSON"),
        (b'{"prompt": "ok"}\n["prompt"]\n', r"p\.jsonl:line 2: expected a JSON object, got list"),
        (b'{"prompt": "\\u0000\\u200b"}\n', r"p\.jsonl:line 1: field 'prompt' is empty"),
        (b"\n\n", r"p\.jsonl: no records found"),
    ],
)
def test_jsonl_schema_errors_name_the_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=message) as info:
        load_prompt_records(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text,lang\nhello,en\n", r"p\.csv:line 1: no field 'prompt' \(available: 'text', 'lang'\)"),
        (b"prompt,lang\nhello,en\nbonjour,fr,extra\n", r"p\.csv:line 3: row has 3 fields but the header has 2"),
        (b"prompt,lang\nhello,en\n\xff\xfe,fr\n", r"p\.csv:line 3: invalid UTF-8"),
        (b'prompt,lang\nhello,en\n"",fr\n', r"p\.csv:line 3: field 'prompt' is empty"),
        (b"", r"p\.csv: file is empty"),
    ],
)
def test_csv_schema_errors_name_the_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=message):
        load_prompt_records(path)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt_records(tmp_path / "missing.jsonl")
    (tmp_path / "p.txt").write_text("hi")
    with pytest.raises(DataFormatError, match=r"unsupported file type '\.txt'"):
        load_prompt_records(tmp_path / "p.txt")


def test_scrub_records_rehashes_and_scrubs_metadata(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Mail me at a@b.com about #A12345", "note": "call (555) 123-4567"}])
    records, counts = scrub_records(load_prompt_records(path), default_scrubber)
    assert records[0].prompt == "Mail me at [EMAIL] about #A12345"
    assert records[0].id == prompt_id("Mail me at [EMAIL] about #A12345")
    assert records[0].metadata == {"note": "call [PHONE]"} and records[0].source_line == 1
    assert counts == {"EMAIL": 1, "PHONE": 1}


def test_scrub_that_empties_a_prompt_is_an_error(tmp_path: Path) -> None:
    records = load_prompt_records(_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": "secret"}]))
    with pytest.raises(DataFormatError, match="line/row 2: the scrubber left an empty prompt"):
        scrub_records(records, lambda t: "" if t == "secret" else t)


def test_load_gzipped_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "one"}\n{"prompt": 2}\n'))
    with pytest.raises(DataFormatError, match=r"p\.jsonl\.gz:line 2: field 'prompt' must be a string, got int"):
        load_prompt_records(path)


# ---------------------------------------------------------------- dedup


def test_exact_duplicates_after_normalisation_and_case() -> None:
    records = [
        _record(t, i)
        for i, t in enumerate(["Reset my password", "  reset MY   password ", "Reset\tmy password", "Other"])
    ]
    result = dedup_records(records, near=False)
    assert [r.prompt for r in result.kept] == ["Reset my password", "Other"]
    assert [(r.record.source_line, r.duplicate_of, r.reason) for r in result.removed] == [
        (1, records[0].id, "exact"),
        (2, records[0].id, "exact"),
    ]
    assert result.summary() == {"kept": 2, "removed_exact": 2, "removed_near": 0}


def test_near_duplicates_removed_with_reason() -> None:
    base = _random_prompts(300, seed=1)
    near_a = "I ordered a blue jacket in size medium last week and it still has not arrived at my house, where is it?"
    near_b = "I ordered a blue jacket in size medium last week and it still has not arrived at my house. Where is it??"
    different = "I ordered a red scarf last month; can you tell me when the refund for the return will be processed?"
    records = [_record(t, i) for i, t in enumerate([near_a, *base[:150], near_b, different, *base[150:]])]
    result = dedup_records(records, threshold=0.8)
    assert [r.record.prompt for r in result.removed] == [near_b]
    removed = result.removed[0]
    assert removed.reason == "near" and removed.duplicate_of == records[0].id and 0.8 <= removed.similarity < 1.0
    assert len(result.kept) == len(records) - 1
    assert dedup_records(records, near=False).removed == []
    strict = dedup_records(records, threshold=0.99)
    assert strict.removed == []


def _jaccard_5grams(x: str, y: str) -> float:
    sx = {x[i : i + 5] for i in range(len(x) - 4)}
    sy = {y[i : i + 5] for i in range(len(y) - 4)}
    return len(sx & sy) / len(sx | sy)


def test_near_duplicate_chain_joins_one_cluster() -> None:
    a = _random_prompts(1, seed=11)[0]
    words = a.split()
    b = " ".join([*words[:3], "qqqqqq", *words[4:]])
    c = " ".join([*words[:3], "qqqqqq", *words[4:-3], "xxxxxx", *words[-2:]])
    assert _jaccard_5grams(a, b) >= 0.8 and _jaccard_5grams(b, c) >= 0.8 and _jaccard_5grams(a, c) < 0.8
    others = _random_prompts(200, seed=12)
    records = [_record(t) for t in [c, *others[:100], a, *others[100:], b]]
    labels = cluster_records(records, threshold=0.8)
    assert labels[0] == labels[101] == labels[-1]
    assert len(set(labels)) == 201
    result = dedup_records(records)
    assert [(r.record.prompt, r.duplicate_of) for r in result.removed] == [(a, records[0].id), (b, records[0].id)]
    assert result.removed[0].similarity < 0.8 <= result.removed[1].similarity


def test_cluster_parameter_errors() -> None:
    with pytest.raises(ValueError, match="threshold"):
        cluster_records([_record("a")], threshold=0.0)
    with pytest.raises(ValueError, match="eval_fraction"):
        split_records([_record("a")], eval_fraction=1.0)


# ---------------------------------------------------------------- splits


def _perturb(text: str, rng: random.Random) -> str:
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = words[i].upper() + "!"
    return " ".join(words)


def test_split_is_deterministic_honours_fraction_and_keeps_near_duplicates_together() -> None:
    rng = random.Random(7)
    texts = _random_prompts(1000, seed=2)
    pairs = [(i, 1000 + k) for k, i in enumerate(range(0, 1000, 10))]
    texts += [_perturb(texts[i], rng) for i, _ in pairs]
    records = [_record(t, i) for i, t in enumerate(texts)]
    split = split_records(records, eval_fraction=0.2, seed=13)
    assert len(split.train) + len(split.eval) == len(records)
    eval_ids = {r.id for r in split.eval}
    assert 0.15 <= len(split.eval) / len(records) <= 0.25
    for i, j in pairs:
        assert (records[i].id in eval_ids) == (records[j].id in eval_ids), (i, j)
    assert split.train_clusters + split.eval_clusters == 1000  # each perturbed copy joined its original

    again = split_records(list(records), eval_fraction=0.2, seed=13)
    assert [r.id for r in again.eval] == [r.id for r in split.eval]
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    assert {r.id for r in split_records(shuffled, eval_fraction=0.2, seed=13).eval} == eval_ids
    assert {r.id for r in split_records(records, eval_fraction=0.2, seed=14).eval} != eval_ids
    assert split_records(records, eval_fraction=0.0, seed=13).eval == []


def test_split_after_dedup_turned_off_still_groups_exact_and_near_duplicates() -> None:
    texts = _random_prompts(400, seed=5)
    records = [_record(t) for t in texts] + [_record(t.upper()) for t in texts[:50]]
    split = split_records(records, eval_fraction=0.5, seed=1)
    eval_keys = {dedup_key(r.prompt) for r in split.eval}
    train_keys = {dedup_key(r.prompt) for r in split.train}
    assert eval_keys.isdisjoint(train_keys)
    assert 0.35 <= len(split.eval) / len(records) <= 0.65
