"""Prompt sets: loading with schema checks, text normalisation, stable ids, PII scrubbing of records.

Accepted inputs: ``.jsonl`` (optionally ``.jsonl.gz``), ``.csv``, ``.parquet``, and a directory written by
``datasets.Dataset.save_to_disk``. One column holds the prompt (``prompt_field``); every other column is
kept in ``PromptRecord.metadata``. Any problem stops the load with a one-line :class:`DataFormatError`
naming the file and the line (JSONL, CSV: the physical line where the record starts) or the row (parquet,
saved datasets: 1-based row index).

Normalisation (:func:`normalize_text`): Unicode NFKC; CRLF/CR and Unicode line/paragraph separators to
``\\n``; control, format (except ZWJ/ZWNJ, which join emoji and scripts), surrogate and private-use
characters removed; tabs and runs of spaces collapsed to one space; spaces around newlines dropped; at most
one blank line in a row; leading and trailing whitespace stripped.

A record's ``id`` is the first 16 hex digits of the SHA-256 of its normalised prompt (UTF-8), so it is the
same on every machine and for every copy of the same text.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.core.errors import UserError
from rlhf.data.pii import ScrubResult, run_scrubber

__all__ = [
    "DataFormatError",
    "PromptRecord",
    "iter_jsonl",
    "load_prompt_records",
    "normalize_text",
    "prompt_id",
    "scrub_records",
]


class DataFormatError(UserError):
    """An input file that does not match the expected schema; the message names file, line and fix."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: ``id`` (content hash of ``prompt``), normalised ``prompt``, extra columns, source position."""

    id: str
    prompt: str
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source_line: int = 0


_KEEP_FORMAT = {"\u200c", "\u200d"}
_LINE_BREAKS = re.compile(r"\r\n|[\r\u2028\u2029\x85\x0b\x0c]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def normalize_text(text: str) -> str:
    """NFKC, unify line breaks, drop invisible/control characters, collapse whitespace, strip."""
    text = _LINE_BREAKS.sub("\n", unicodedata.normalize("NFKC", text))
    if not text.isascii() or _ASCII_CONTROL.search(text):
        text = "".join(
            ch
            for ch in text
            if ch in "\n\t" or ch in _KEEP_FORMAT or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
        )
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip(" ") for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def prompt_id(normalised: str) -> str:
    """Stable id of a normalised text: 16 hex digits of its SHA-256."""
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:16]


def _make_record(
    path: Path, where: str, position: int, value: Any, metadata: dict[str, Any], field_name: str
) -> PromptRecord:
    if value is None:
        raise DataFormatError(f"{path}:{where} {position}: field '{field_name}' is null; remove the record or fill it")
    if not isinstance(value, str):
        raise DataFormatError(
            f"{path}:{where} {position}: field '{field_name}' must be a string, got {type(value).__name__}"
        )
    text = normalize_text(value)
    if not text:
        raise DataFormatError(
            f"{path}:{where} {position}: field '{field_name}' is empty or whitespace only; remove the record or fill it"
        )
    return PromptRecord(id=prompt_id(text), prompt=text, metadata=metadata, source_line=position)


def _missing(path: Path, where: str, position: int, field_name: str, available: list[str]) -> DataFormatError:
    listed = ", ".join(repr(c) for c in available) or "none"
    return DataFormatError(
        f"{path}:{where} {position}: no field '{field_name}' (available: {listed}); "
        f"set the prompt field to one of these or fix the file"
    )


def _decode_lines(path: Path, raw: bytes) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            yield number, line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFormatError(
                f"{path}:line {number}: invalid UTF-8 at byte {exc.start} of the line; re-save the file as UTF-8"
            ) from None


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a ``.jsonl``/``.jsonl.gz`` file."""
    for number, line in _decode_lines(path, _read_bytes(path)):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:line {number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}:line {number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def _load_jsonl(path: Path, prompt_field: str) -> list[PromptRecord]:
    records = []
    for number, obj in iter_jsonl(path):
        if prompt_field not in obj:
            raise _missing(path, "line", number, prompt_field, list(obj))
        metadata = {k: v for k, v in obj.items() if k != prompt_field}
        if isinstance(metadata.get("metadata"), dict):  # a prompts file of ours (id, prompt, metadata): one level
            nested = metadata.pop("metadata")
            metadata = {**nested, **metadata}
        records.append(_make_record(path, "line", number, obj[prompt_field], metadata, prompt_field))
    return records


def _load_csv(path: Path, prompt_field: str) -> list[PromptRecord]:
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(f"{path}:line {line}: invalid UTF-8; re-save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataFormatError(f"{path}:line 1: malformed CSV header ({exc})") from None
    if header is None:
        raise DataFormatError(f"{path}: file is empty; expected a header row naming a '{prompt_field}' column")
    if prompt_field not in header:
        raise _missing(path, "line", 1, prompt_field, header)
    dupes = [name for name, n in Counter(header).items() if n > 1]
    if dupes:
        raise DataFormatError(f"{path}:line 1: duplicate column names {dupes}; rename them")
    records = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataFormatError(f"{path}:line {start}: malformed CSV ({exc})") from None
        if not row:
            continue
        if len(row) != len(header):
            raise DataFormatError(
                f"{path}:line {start}: row has {len(row)} fields but the header has {len(header)}; "
                f"quote fields that contain commas"
            )
        values = dict(zip(header, row))
        metadata = {k: v for k, v in values.items() if k != prompt_field}
        records.append(_make_record(path, "line", start, values[prompt_field], metadata, prompt_field))
    return records


def _load_table(path: Path, prompt_field: str, columns: list[str], rows: list[dict[str, Any]]) -> list[PromptRecord]:
    if prompt_field not in columns:
        raise _missing(path, "row", 1, prompt_field, columns)
    records = []
    for number, values in enumerate(rows, start=1):
        metadata = {k: v for k, v in values.items() if k != prompt_field}
        records.append(_make_record(path, "row", number, values[prompt_field], metadata, prompt_field))
    return records


def _load_parquet(path: Path, prompt_field: str) -> list[PromptRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    return _load_table(path, prompt_field, table.column_names, table.to_pylist())


def _load_saved_dataset(path: Path, prompt_field: str) -> list[PromptRecord]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataFormatError(
            f"{path}: directory is not a dataset saved with Dataset.save_to_disk ({exc}); "
            f"point to a .jsonl, .csv or .parquet file or a saved dataset"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        raise DataFormatError(f"{path}: holds several splits ({splits}); point to one split's subdirectory")
    return _load_table(path, prompt_field, list(loaded.column_names), loaded.to_list())


_LOADERS: dict[str, Callable[[Path, str], list[PromptRecord]]] = {
    ".jsonl": _load_jsonl,
    ".jsonl.gz": _load_jsonl,
    ".csv": _load_csv,
    ".parquet": _load_parquet,
}


def load_prompt_records(path: str | Path, prompt_field: str = "prompt") -> list[PromptRecord]:
    """Load, check and normalise a prompt file or saved dataset directory, in file order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file {path} does not exist; check the path")
    if path.is_dir():
        return _load_saved_dataset(path, prompt_field)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".jsonl.gz") else path.suffix.lower()
    loader = _LOADERS.get(suffix)
    if loader is None:
        raise DataFormatError(
            f"{path}: unsupported file type '{suffix}'; use .jsonl, .jsonl.gz, .csv, .parquet or a saved dataset directory"
        )
    records = loader(path, prompt_field)
    if not records:
        raise DataFormatError(f"{path}: no records found; the prompt set must hold at least one prompt")
    return records


def scrub_records(
    records: list[PromptRecord], scrubber: Callable[[str], ScrubResult | str], scrub_metadata: bool = True
) -> tuple[list[PromptRecord], dict[str, int]]:
    """Scrub each prompt (and string metadata values); re-normalise and re-hash. Returns records and counts per kind."""
    counts: Counter[str] = Counter()

    def scrub(text: str) -> str:
        result = run_scrubber(scrubber, text)
        counts.update(result.counts)
        return result.text

    out = []
    for record in records:
        text = normalize_text(scrub(record.prompt))
        if not text:
            raise DataFormatError(f"record from line/row {record.source_line}: the scrubber left an empty prompt")
        metadata = dict(record.metadata)
        if scrub_metadata:
            metadata = {k: scrub(v) if isinstance(v, str) else v for k, v in metadata.items()}
        out.append(PromptRecord(id=prompt_id(text), prompt=text, metadata=metadata, source_line=record.source_line))
    return out, dict(counts)
