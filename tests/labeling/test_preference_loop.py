"""The preference loop against the real local service: 50 demo prompts x 4 candidates pushed with 15 honeypots;
three bots (one careless, one position-biased) annotate with overlap 2 while a person works on the same dataset;
pull. Then: re-push and re-pull change nothing, an incremental pull takes only what is new, an interrupted push
resumes without duplicates. Candidates come straight from the demo world (no model) to keep it fast."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import httpx
import pytest

from rlhf.core.errors import USER_ERRORS
from rlhf.data.candidates import candidate_id
from rlhf.data.pairs import read_pairs
from rlhf.labeling import ArgillaHTTP, create_user, iter_records, pending_queue, ranking_value, submit_response
from rlhf.labeling.loop.common import load_pseudonym_key, pseudonym, read_push
from rlhf.labeling.loop.slots import read_slot_map
from rlhf.stages import load_config
from rlhf.stages.label_pull import run_pull
from rlhf.stages.label_push import open_push, run_push
from rlhf.stages.label_simulate import run_simulate
from rlhf.world.demo import gold_rubric
from tests.labeling.conftest import demo_replies

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "label"
EMAIL = "jane.doe@example.com"
# position_bias 0.9 and bias_p 0.001: the biased bot is flagged in every run, an unbiased one in 1 run of 1000
SIMULATE = ["position_bias=0.9"]
PULL = ["quality.bias_p=0.001"]


def write_demo_candidates(path: Path, n: int, seed: int) -> Path:
    """``n`` demo prompts with 4 distinct candidates of random quality each, in the candidates.jsonl format."""
    rows = []
    for prompt, texts in demo_replies(n, seed):
        rows.append({"prompt_id": prompt.id, "prompt": prompt.text, "metadata": {"intent": prompt.intent},
                     "candidates": [{"id": candidate_id(prompt.id, t), "text": t, "policy": f"policy-{i % 2}",
                                     "logprob": -1.0 - i} for i, t in enumerate(texts)]})
    rows[0]["candidates"][0]["text"] += f" Write to {EMAIL} for help."  # PII echoed by a model
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@dataclass
class Round:
    live: object
    root: Path
    candidates: Path
    push: Path
    snapshot: Path
    service: list[str]
    bots: dict[str, str]  # role -> username
    person: str
    key: bytes

    def pull_config(self, *extra: str):
        return load_config(CONFIGS / "pull-demo.yaml", [f"run.root={self.root}", f"push={self.push}", *self.service,
                                                        *PULL, *extra])


def _rank_by_rubric(record: dict) -> list[list[str]]:
    fields = record["fields"]
    slots = [f"response_{i}" for i in range(1, 5)]
    return [[s] for s in sorted(slots, key=lambda s: -gold_rubric(fields["prompt"], fields[s]))]


@pytest.fixture(scope="module")
def demo_round(labeling_service, tmp_path_factory) -> Round:
    live = labeling_service
    root = tmp_path_factory.mktemp("loop")
    service = [f"service.home={live.home}"]
    candidates = write_demo_candidates(root / "candidates.jsonl", 50, seed=0)
    push = run_push(load_config(CONFIGS / "push-demo.yaml", [f"run.root={root}", f"candidates={candidates}", *service]),
                    progress=False)
    info = read_push(push)
    person = create_user(live.http(), f"person-{uuid.uuid4().hex[:6]}", workspaces=(info.workspace,))

    def annotate_by_hand() -> None:  # a person works the same queue while the bots run
        client = live.http(person.api_key)
        for _ in range(4):
            page, _ = pending_queue(client, info.dataset_id, 1)
            if page:
                submit_response(client, page[0]["id"], {"ranking": {"value": ranking_value(_rank_by_rubric(page[0]))}})
            time.sleep(0.3)

    prefix = f"bot{uuid.uuid4().hex[:5]}"
    person_thread = threading.Thread(target=annotate_by_hand)
    person_thread.start()
    results = run_simulate(load_config(CONFIGS / "simulate-demo.yaml",
                                       [f"push={push}", f"username_prefix={prefix}", *service, *SIMULATE]))
    person_thread.join()
    live_round = Round(live, root, candidates, push, Path(), service, {r.role: r.username for r in results},
                       person.user.username, load_pseudonym_key(live.config))
    live_round.snapshot = run_pull(live_round.pull_config())
    return live_round


def _server_submitted(owner: ArgillaHTTP, dataset_id: str) -> dict[str, int]:
    users = owner.get(f"/api/v1/datasets/{dataset_id}/users/progress")["users"]
    return {u["username"]: sum(u[part]["submitted"] for part in ("completed", "pending")) for u in users}


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------- push
def test_push_logs_one_plain_text_dataset_with_shuffled_slots_and_nothing_secret(demo_round):
    owner = demo_round.live.http()
    info = read_push(demo_round.push)
    slot_map = read_slot_map(demo_round.push)
    assert info.records == len(slot_map) == 65 and info.honeypots == 15 and info.min_submitted == 2
    dataset = owner.get(f"/api/v1/datasets/{info.dataset_id}")
    assert dataset["distribution"] == {"strategy": "overlap", "min_submitted": 2}
    assert dataset["guidelines"] == (demo_round.push / "guidelines.md").read_text()
    assert dataset["guidelines"].startswith("# Ranking guidelines (version 2)")
    fields = owner.get(f"/api/v1/datasets/{info.dataset_id}/fields")["items"]
    assert [f["name"] for f in fields] == ["prompt", *info.slot_fields]
    assert all(f["settings"]["use_markdown"] is False for f in fields)
    questions = {q["name"]: q for q in owner.get(f"/api/v1/datasets/{info.dataset_id}/questions")["items"]}
    assert questions["ranking"]["settings"]["type"] == "ranking" and questions["ranking"]["required"]
    assert not questions["best_rating"]["required"] and not questions["rationale"]["required"]
    assert "all_bad" in {o["value"] for o in questions["flags"]["settings"]["options"]}

    records = list(iter_records(owner, info.dataset_id, include="responses"))
    assert sorted(r["external_id"] for r in records) == sorted(slot_map)
    candidate_ids = {c for s in slot_map.values() for c in s.slots}
    positions = set()
    for record in records:
        slot = slot_map[record["external_id"]]
        assert record["fields"] == slot.fields("prompt", info.slot_fields)  # the slot map is what was shown
        shown = json.dumps([record["fields"], record["metadata"]])
        assert EMAIL not in shown and not any(c in shown for c in candidate_ids)
        assert "policy-0" not in shown and "policy-1" not in shown and "honeypot" not in shown.lower()
        positions.add(slot.slots.index(min(slot.slots)))
    assert positions == {0, 1, 2, 3}  # the slot order differs between records
    assert sum("[EMAIL]" in json.dumps(r["fields"]) for r in records) == 1
    hidden = [s for s in slot_map.values() if s.honeypot]
    assert len(hidden) == 15 and all(sorted(s.answer.values()) == [1, 2, 3, 4] for s in hidden)


def test_push_again_changes_nothing_and_a_repush_finds_every_record(demo_round, capsys):
    cfg = load_config(CONFIGS / "push-demo.yaml", [f"run.root={demo_round.root}", f"candidates={demo_round.candidates}",
                                                   *demo_round.service])
    before = _files(demo_round.push)
    assert open_push(cfg).complete and open_push(cfg).dir == demo_round.push  # known without asking Argilla
    assert run_push(cfg, progress=False) == demo_round.push
    assert "up to date, skipping" in capsys.readouterr().out and _files(demo_round.push) == before
    info = read_push(demo_round.push)
    # another seed (a new run folder) into the same dataset: records are keyed by content, nothing is duplicated,
    # and the new slot map takes the slot order the server shows
    other = run_push(load_config(CONFIGS / "push-demo.yaml", [
        f"run.root={demo_round.root}", f"candidates={demo_round.candidates}", *demo_round.service, "run.seed=7",
        f"dataset={info.dataset}"]), progress=False)
    assert other != demo_round.push
    again = json.loads((other / "push.json").read_text())
    assert again["logged_now"] == 0 and again["already_present"] == 65
    owner = demo_round.live.http()
    assert owner.get(f"/api/v1/datasets/{info.dataset_id}/records", params={"limit": 1})["total"] == 65
    new_map, old_map = read_slot_map(other), read_slot_map(demo_round.push)
    assert {k: v.slots for k, v in new_map.items()} == {k: v.slots for k, v in old_map.items()}


# ------------------------------------------------------------------------------------------- pull
def test_snapshot_holds_every_response_and_flags_the_bad_bots(demo_round):
    owner = demo_round.live.http()
    info = read_push(demo_round.push)
    snapshot = demo_round.snapshot
    rows = [json.loads(line) for line in (snapshot / "responses.jsonl").read_text().splitlines()]
    server = _server_submitted(owner, info.dataset_id)
    assert sum(r["status"] == "submitted" for r in rows) == sum(server.values())
    names = {role: pseudonym(name, demo_round.key) for role, name in demo_round.bots.items()}
    person = pseudonym(demo_round.person, demo_round.key)
    counts = {a: sum(r["annotator"] == a for r in rows) for a in {r["annotator"] for r in rows}}
    assert counts == {pseudonym(u, demo_round.key): n for u, n in server.items()}
    assert counts[person] >= 1 and all(counts[n] > 20 for n in names.values())
    every_file = "".join(p.read_text() for p in snapshot.iterdir() if p.is_file())
    for username in [*demo_round.bots.values(), demo_round.person]:
        assert username not in every_file  # pseudonymised everywhere

    report = json.loads((snapshot / "quality_report.json").read_text())
    flags = {a["annotator"]: a["flags"] for a in report["per_annotator"]}
    assert "careless" in flags[names["careless"]]
    assert "position_bias" in flags[names["biased"]]
    assert flags[names["honest"]] == []
    assert report["overlap"] >= 2 and report["honeypot_accuracy"] is not None
    summary = json.loads((snapshot / "snapshot.json").read_text())
    assert set(summary["excluded_annotators"]) >= {names["careless"], names["biased"]}
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert manifest["inputs"]["push"]["stage_dir"] == str(demo_round.push)  # lineage: pairs -> push -> candidates


def test_pairs_agree_with_the_rubric_like_the_honest_bot(demo_round):
    slot_map = read_slot_map(demo_round.push)
    rows = [json.loads(line) for line in (demo_round.snapshot / "responses.jsonl").read_text().splitlines()]
    pairs = read_pairs(demo_round.snapshot)
    assert pairs and all(p.chosen != p.rejected and 0.5 < p.agreement <= 1 for p in pairs)
    assert not {p.provenance["record"] for p in pairs} & {k for k, s in slot_map.items() if s.honeypot}

    def gold(record: str, cid: str) -> float:
        return gold_rubric(slot_map[record].prompt, slot_map[record].texts[cid])

    def accuracy(verdicts: list[tuple[str, str, str]]) -> float:  # (record, better, worse)
        decided = [(r, a, b) for r, a, b in verdicts if gold(r, a) != gold(r, b)]
        return sum(gold(r, a) > gold(r, b) for r, a, b in decided) / len(decided)

    honest = pseudonym(demo_round.bots["honest"], demo_round.key)
    honest_verdicts = []
    for row in rows:
        if row["annotator"] == honest and not row["honeypot"]:
            for a, b in combinations(sorted(row["ranks"]), 2):
                if row["ranks"][a] != row["ranks"][b]:
                    honest_verdicts.append((row["record"], *((a, b) if row["ranks"][a] < row["ranks"][b] else (b, a))))
    pair_accuracy = accuracy([(p.provenance["record"], p.chosen_id, p.rejected_id) for p in pairs])
    assert accuracy(honest_verdicts) > 0.9
    assert abs(pair_accuracy - accuracy(honest_verdicts)) < 0.05
    for pair in pairs:
        slot = slot_map[pair.provenance["record"]]
        assert pair.prompt == slot.prompt and pair.chosen == slot.texts[pair.chosen_id]
        assert pair.provenance["chosen_policy"] in ("policy-0", "policy-1")


def test_pull_again_changes_nothing_and_an_incremental_pull_takes_only_what_is_new(demo_round, capsys):
    first = demo_round.snapshot
    before = _files(first)
    assert run_pull(demo_round.pull_config()) == first
    assert "nothing new" in capsys.readouterr().out and _files(first) == before

    info = read_push(demo_round.push)
    late = create_user(demo_round.live.http(), f"late-{uuid.uuid4().hex[:6]}", workspaces=(info.workspace,))
    client = demo_round.live.http(late.api_key)
    records = list(iter_records(demo_round.live.http(), info.dataset_id, include="responses"))[:3]
    for record in records[:2]:
        submit_response(client, record["id"], {"ranking": {"value": ranking_value(_rank_by_rubric(record))}})
    submit_response(client, records[2]["id"], {"ranking": {"value": ranking_value(_rank_by_rubric(records[2]))}},
                    status="draft")
    second = run_pull(demo_round.pull_config())
    assert second != first and _files(first) == before  # an earlier snapshot never changes
    summary = json.loads((second / "snapshot.json").read_text())
    old_rows = (first / "responses.jsonl").read_text().splitlines()
    assert summary["previous"] == str(first)
    assert summary["changes"] == {"new": 2, "changed": 0, "unchanged": len(old_rows), "removed": 0}
    assert summary["responses"]["drafts_left_out"] == 1
    new_rows = (second / "responses.jsonl").read_text().splitlines()
    assert len(new_rows) == len(old_rows) + 2 and set(old_rows) <= set(new_rows)


def test_status_and_pull_through_the_cli(demo_round, capsys):
    from rlhf.cli import build_parser

    def label(*argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(["label", *argv])
        try:
            code = int(args.func(args) or 0)
        except USER_ERRORS as err:
            print(f"rlhf: error: {err}", file=sys.stderr)
            code = 2
        out, err = capsys.readouterr()
        return code, out, err

    pull = str(CONFIGS / "pull-demo.yaml")
    overrides = [f"push={demo_round.push}", *demo_round.service]
    code, out, _ = label("status", pull, "--json", *overrides)
    status = json.loads(out)
    assert code == 0 and status["records"] == 65 and status["completed"] + status["pending"] == 65
    by_name = {a["username"]: a for a in status["annotators"]}
    careless = demo_round.bots["careless"]
    assert by_name[careless]["pseudonym"] == pseudonym(careless, demo_round.key)
    assert sum(a["submitted"] for a in status["annotators"]) >= 130
    code, out, _ = label("pull", pull, *overrides, f"run.root={demo_round.root}", *PULL)
    assert code == 0 and "label pull:" in out
    code, _, err = label("pull", "push=/nowhere", *demo_round.service)
    assert code == 2 and "not a completed push folder" in err


# ------------------------------------------------------------------------------------------- interruption
class Killed(BaseException):
    """The push process dying (kill -9) right after the server stored a batch."""


class DieAfterBulkWrites(httpx.BaseTransport):
    """Sends requests to the real server; after the n-th bulk record write has been stored, the client dies."""

    def __init__(self, writes: int):
        self.inner = httpx.HTTPTransport()
        self.left = writes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "PUT" and request.url.path.endswith("/records/bulk"):
            self.left -= 1
            if self.left == 0:
                response.read()
                raise Killed()
        return response


def test_an_interrupted_push_resumes_without_duplicates(labeling_service, tmp_path):
    live = labeling_service
    candidates = write_demo_candidates(tmp_path / "candidates.jsonl", 12, seed=5)
    cfg = load_config(CONFIGS / "push-demo.yaml", [f"run.root={tmp_path}", f"candidates={candidates}",
                                                   f"service.home={live.home}", "batch_size=5", "honeypots.demo=0",
                                                   f"dataset=interrupted-{uuid.uuid4().hex[:6]}"])
    dying = ArgillaHTTP(live.url, live.owner_key, transport=DieAfterBulkWrites(2))
    with pytest.raises(Killed):
        run_push(cfg, http=dying, progress=False)
    folder = next((tmp_path / "label_push").iterdir())
    assert (folder / "slots.jsonl").is_file() and not (folder / "manifest.json").exists()  # not marked complete
    owner = live.http()
    ids = {d["name"]: d["id"] for d in owner.get("/api/v1/me/datasets")["items"]}
    dataset_id = ids[cfg.dataset]
    assert owner.get(f"/api/v1/datasets/{dataset_id}/records", params={"limit": 1})["total"] == 10

    assert run_push(cfg, progress=False) == folder
    info = json.loads((folder / "push.json").read_text())
    assert info["logged_now"] == 2 and info["already_present"] == 10
    records = list(iter_records(owner, dataset_id, include="responses"))
    slot_map = read_slot_map(folder)
    assert len(records) == 12 and sorted(r["external_id"] for r in records) == sorted(slot_map)
    for record in records:
        assert record["fields"] == slot_map[record["external_id"]].fields("prompt", info["slot_fields"])
