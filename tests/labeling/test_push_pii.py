"""``rlhf label push`` on the planted PII corpus (tests/pii_corpus.py), against the real local service: what the
server stored (read back over its HTTP API) holds no identifying fragment of any planted value, in the prompt
or in any reply, while the ordinary text around the values survives. The same candidates pushed with
``scrubber=none`` show every value on the server, so the read-back sees what a push stores."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from rlhf.cli import build_parser
from rlhf.data.candidates import candidate_id
from rlhf.labeling import iter_records
from rlhf.labeling.loop.common import read_push
from rlhf.labeling.loop.slots import read_slot_map
from rlhf.stages import load_config
from rlhf.stages.label_push import open_push
from tests.pii_corpus import CORPUS, REPLIES, Planted, leaks, lost

pytestmark = pytest.mark.slow



def _write_candidates(path: Path) -> Path:
    """Each planted sentence as a prompt with the corpus's model replies (4: the template's slots)."""
    rows = []
    for i, item in enumerate(CORPUS):
        prompt_id = f"pii-{i:03d}"
        texts = [reply.format(value=item.value, text=item.text) for reply in REPLIES]
        rows.append({"prompt_id": prompt_id, "prompt": item.text,
                     "candidates": [{"id": candidate_id(prompt_id, t), "text": t} for t in texts]})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _push(capsys: pytest.CaptureFixture, overrides: list[str]) -> Path:
    """Run ``rlhf label push OVERRIDES`` as the console script does; the push's run folder."""
    args = build_parser().parse_args(["label", "push", *overrides])
    assert int(args.func(args) or 0) == 0
    capsys.readouterr()
    return open_push(load_config(None, overrides, expect_stage="label_push")).dir


def _stored(live, push: Path) -> dict[int, dict[str, str]]:
    """Corpus index -> the text fields the SERVER holds for that prompt's record (prompt and reply slots)."""
    info = read_push(push)
    slot_map = read_slot_map(push)
    out = {}
    for record in iter_records(live.http(), info.dataset_id, include="responses"):
        prompt_id = slot_map[record["external_id"]].prompt_id
        out[int(prompt_id.removeprefix("pii-"))] = {k: v for k, v in record["fields"].items() if isinstance(v, str)}
    assert sorted(out) == list(range(len(CORPUS))), "a prompt of the corpus is missing on the server"
    return out


def _leaks_by_field(item: Planted, fields: dict[str, str]) -> dict[str, list[str]]:
    return {name: leaks(item, text) for name, text in fields.items() if leaks(item, text)}


@pytest.fixture(scope="module")
def corpus_candidates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_candidates(tmp_path_factory.mktemp("pii") / "candidates.jsonl")


def test_pushed_corpus_leaves_no_fragment_on_the_server(labeling_service, corpus_candidates, tmp_path, capsys):
    service = [f"service.home={labeling_service.home}"]
    push = _push(capsys, [f"run.root={tmp_path}", f"candidates={corpus_candidates}", "scrubber=default",
                          f"workspace=pii-{uuid.uuid4().hex[:6]}", f"dataset=pii-{uuid.uuid4().hex[:8]}", *service])
    info = json.loads((push / "push.json").read_text(encoding="utf-8"))
    assert info["records"] == len(CORPUS) and info["prompts_skipped"] == {}

    stored = _stored(labeling_service, push)
    leaked = {item.value: _leaks_by_field(item, stored[i]) for i, item in enumerate(CORPUS)
              if _leaks_by_field(item, stored[i])}
    assert leaked == {}
    assert sum(info["pii_replaced"].values()) == len(CORPUS) * (1 + len(REPLIES)), info["pii_replaced"]
    for i, item in enumerate(CORPUS):
        fields = stored[i]
        echo = next(text for name, text in fields.items() if name != "prompt" and text.startswith("Thanks!"))
        assert lost(item, fields["prompt"]) == [] and lost(item, echo) == [], (item.value, fields)
        assert all(f"[{item.kind}]" in text for text in fields.values()), (item.value, fields)

    # the slot map beside the push (what the pull maps answers back with) holds the same scrubbed texts
    slot_map_text = (push / "slots.jsonl").read_text(encoding="utf-8")
    for record in map(json.loads, slot_map_text.splitlines()):
        item = CORPUS[int(record["prompt_id"].removeprefix("pii-"))]
        assert leaks(item, record["prompt"]) == [] and not any(leaks(item, t) for t in record["texts"].values())


def test_unscrubbed_push_shows_every_value_on_the_server(labeling_service, corpus_candidates, tmp_path, capsys):
    """The control: with scrubber=none every planted value reaches the server whole, so the check above can fail."""
    service = [f"service.home={labeling_service.home}"]
    push = _push(capsys, [f"run.root={tmp_path}", f"candidates={corpus_candidates}", "scrubber=none",
                          f"workspace=pii-{uuid.uuid4().hex[:6]}", f"dataset=pii-none-{uuid.uuid4().hex[:8]}",
                          *service])
    stored = _stored(labeling_service, push)
    for i, item in enumerate(CORPUS):
        assert _leaks_by_field(item, stored[i]).get("prompt") == list(item.fragments()), item.value
        assert item.text == stored[i]["prompt"]
