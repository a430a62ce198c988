"""``rlhf eval`` on tiny models end to end (sampling, KL, reward model, judge, best-of-n, results files),
its config checks, the LM judge, and ``rlhf eval-human push|pull`` against an in-memory Argilla API."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from rlhf.cli import main
from rlhf.core.config import ConfigError
from rlhf.stages import load_config


def _eval_config(*overrides: str):
    return load_config(None, list(overrides), expect_stage="eval")


# --- config checks (fast) -----------------------------------------------------------------------------

def test_config_contradictions_name_the_fields():
    with pytest.raises(ConfigError, match="kl.enabled needs generation.temperature=1"):
        _eval_config("generation.temperature=0.7")
    _eval_config("generation.temperature=0.7", "kl.enabled=false")
    with pytest.raises(ConfigError, match="scoring.primary 'rm/x' is not a configured scorer"):
        _eval_config("scoring.primary=rm/x")
    with pytest.raises(ConfigError, match="best_of_n.n > 0 needs a proxy"):
        _eval_config("best_of_n.n=4")
    with pytest.raises(ConfigError, match="baseline.name 'a' is also a checkpoint name"):
        _eval_config("baseline={name: a, path: tiny}", "checkpoints=[{name: a, path: tiny}]")
    with pytest.raises(ConfigError, match=r"best_of_n.policies \['b'\] are not among"):
        _eval_config("baseline=tiny", "best_of_n.policies=[b]")
    with pytest.raises(ConfigError, match="no scorer"):
        _eval_config("scoring.rubric=null")
    cfg = _eval_config("checkpoints=[runs/dpo/run-abc]", "baseline=runs/sft/run-1")
    assert cfg.checkpoints[0].name == "dpo/run-abc" and cfg.baseline.name == "sft/run-1"


def test_cli_reports_missing_inputs_in_one_line(capsys, tmp_path):
    assert main(["eval", f"run.root={tmp_path}"]) == 2
    assert "eval needs a baseline and at least one checkpoint" in capsys.readouterr().err
    assert main(["eval-human", "push", f"run.root={tmp_path}"]) == 2
    assert "rlhf eval-human needs eval_dir=<eval stage folder> and policy_a=<checkpoint name>" in capsys.readouterr().err
    assert main(["eval", "human", "push", "configs/eval/human-ab.yaml"]) == 2  # the old form names the new one
    assert "did you mean 'rlhf eval-human'?" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["push", "pull"])
def test_eval_human_actions_load_the_eval_human_config(action, monkeypatch, tmp_path):
    """``rlhf eval-human push|pull CONFIG key=value`` runs that action on the config file plus overrides."""
    from rlhf.stages import eval_human

    seen = []
    monkeypatch.setattr(eval_human, f"run_{action}", seen.append)
    config = Path(__file__).resolve().parents[1] / "configs" / "eval" / "human-ab.yaml"
    assert main(["eval-human", action, str(config), f"run.root={tmp_path}", "max_items=7"]) == 0
    (cfg,) = seen
    assert (cfg.stage, cfg.run.root, cfg.max_items) == ("eval_human", str(tmp_path), 7)
    with pytest.raises(SystemExit):
        main(["eval-human", "publish"])


# --- the stage on tiny models (slow) -------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The tiny policy, a perturbed copy (same tokenizer, different weights) and a tiny reward model."""
    from transformers import AutoModelForCausalLM

    from rlhf.models.loader import load_tokenizer, resolve_model_path

    base = Path(resolve_model_path("tiny"))
    root = tmp_path_factory.mktemp("models")
    model = AutoModelForCausalLM.from_pretrained(base)
    generator = np.random.default_rng(0)
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.from_numpy(generator.normal(0, 0.05, size=tuple(param.shape)).astype(np.float32)))
    model.save_pretrained(root / "perturbed")
    load_tokenizer(str(base)).save_pretrained(root / "perturbed")
    shutil.copytree(base, root / "rm")
    (root / "rm" / "reward_stats.json").write_text(json.dumps({"mean": 0.25, "std": 2.0, "count": 10}))
    return {"base": base, "perturbed": root / "perturbed", "rm": root / "rm"}


@pytest.fixture(scope="module")
def eval_run(models, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("runs")
    args = ["eval", f"run.root={root}", "baseline={name: base, path: tiny}",
            f"checkpoints=[{{name: same, path: tiny}}, {{name: perturbed, path: {models['perturbed']}}}]",
            f"scoring.reward_models=[{{name: tiny, path: {models['rm']}}}]",
            "scoring.judge.callable=rlhf.eval.judge:rubric_judge", "prompts.demo_count=8",
            "generation.max_new_tokens=12", "generation.batch_size=8", "best_of_n.n=4", "best_of_n.prompts=2",
            "stats.n_bootstrap=200", "stats.lc_bootstrap=200"]
    assert main(args) == 0
    (folder,) = list((root / "eval").iterdir())
    return folder, root, args


@pytest.mark.slow
def test_eval_writes_results_and_samples(eval_run):
    folder, _, _ = eval_run
    for name in ("results.json", "samples.parquet", "best_of_n.parquet", "metrics.json", "manifest.json"):
        assert (folder / name).is_file(), name
    frame = pd.read_parquet(folder / "samples.parquet")
    assert len(frame) == 3 * 8 and set(frame.policy) == {"base", "same", "perturbed"}
    for column in ("reply", "tokens", "finished", "kl", "score/gold", "score/rm/tiny", "raw/rm/tiny", "judge_prob"):
        assert column in frame, column
    assert np.allclose(frame["score/rm/tiny"], (frame["raw/rm/tiny"] - 0.25) / 2.0)
    assert frame["tokens"].between(1, 12).all()
    results = json.loads((folder / "results.json").read_text())
    assert results["policies"] == ["base", "same", "perturbed"] and results["primary"] == "rm/tiny"
    assert results["scorers"] == ["rm/tiny", "gold", "judge"]
    assert results["reward_normalisation"]["tiny"] == {"mean": 0.25, "std": 2.0}
    assert set(results["prompt_set"]["categories"]) <= {"order_status", "returns", "shipping", "payments",
                                                        "cancellations", "warranty"}
    assert {row["category"] for row in results["categories"]} == set(frame.category)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"policy/base", "policy/same", "policy/perturbed", "reward/tiny", "prompts"} <= set(manifest["inputs"])
    assert manifest["metrics"]["eval/same/win_rate/rm/tiny"] == 0.5


@pytest.mark.slow
def test_checkpoint_against_itself_is_half_with_zero_kl(eval_run):
    folder, _, _ = eval_run
    results = json.loads((folder / "results.json").read_text())
    frame = pd.read_parquet(folder / "samples.parquet")
    same, base = frame[frame.policy == "same"], frame[frame.policy == "base"]
    assert same.reply.tolist() == base.reply.tolist()  # same weights, same seed: same replies
    for row in results["comparisons"]:
        if row["policy"] == "same" and row["baseline"] == "base":
            assert row["win_rate"] == 0.5 and row["ci_low"] <= 0.5 <= row["ci_high"], row
            assert row["cp_low"] < 0.5 < row["cp_high"]
    assert results["summary"]["same"]["kl"]["kl"] == 0.0
    assert results["summary"]["base"]["kl"]["kl"] == 0.0
    perturbed_kl = results["summary"]["perturbed"]["kl"]
    assert perturbed_kl["kl"] > 0 and perturbed_kl["n"] == 8
    assert frame.loc[frame.policy == "perturbed", "judge_prob"].between(0, 1).all()
    assert frame.loc[frame.policy == "base", "judge_prob"].isna().all()


@pytest.mark.slow
def test_best_of_n_and_rerun_skips(eval_run, capsys):
    folder, _, args = eval_run
    results = json.loads((folder / "results.json").read_text())
    curve = results["best_of_n"]["base"]
    assert curve["n"] == [1, 2, 4] and curve["prompts"] == 2 and curve["proxy"] == sorted(curve["proxy"])
    assert curve["kl_bound"][0] == 0.0 and len(curve["gold"]) == 3
    bon = pd.read_parquet(folder / "best_of_n.parquet")
    assert len(bon) == 2 * 4 and "score/rm/tiny" in bon
    capsys.readouterr()
    assert main(args) == 0
    assert "up to date, skipping" in capsys.readouterr().out


@pytest.mark.slow
def test_report_from_a_real_eval(eval_run):
    folder, root, _ = eval_run
    assert main(["report", f"run.root={root}", f"eval_dir={folder}"]) == 0
    (report,) = list((root / "report").glob("*/report.html"))
    html = report.read_text(encoding="utf-8")
    assert "perturbed vs base" in html and "<script" not in html.lower()


@pytest.mark.slow
def test_lm_judge_asks_both_orders(models):
    from rlhf.eval.judge import LMJudge, judge_both_orders
    from rlhf.models.loader import load_model, load_tokenizer

    judge = LMJudge(load_model(str(models["base"]), "reference", device="cpu"), load_tokenizer(str(models["base"])))
    prompts, a, b = ["Where is my order #A1?"] * 2, ["It ships today.", "Hello."], ["Hello.", "It ships today."]
    result = judge_both_orders(judge, prompts, a, b)
    assert np.all((result.prob_a >= 0) & (result.prob_a <= 1))
    assert np.allclose(result.prob_a, (result.forward + 1 - result.backward) / 2)
    # Swapping A and B mirrors the averaged verdict exactly.
    assert result.prob_a[0] == pytest.approx(1 - result.prob_a[1], abs=1e-6)


# --- human A/B through the Argilla REST API (an in-memory server at the HTTP edge) ----------------------

class FakeArgilla:
    """The endpoints ``rlhf eval-human`` uses, answered from memory."""

    def __init__(self) -> None:
        self.workspaces: dict[str, str] = {}
        self.datasets: dict[str, dict] = {}
        self.records: dict[str, list[dict]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        if path == "/api/v1/me/workspaces":
            return httpx.Response(200, json={"items": [{"id": i, "name": n} for n, i in self.workspaces.items()]})
        if path == "/api/v1/workspaces" and method == "POST":
            self.workspaces[body["name"]] = str(uuid.uuid4())
            return httpx.Response(201, json={"id": self.workspaces[body["name"]], "name": body["name"]})
        if path == "/api/v1/me/datasets":
            return httpx.Response(200, json={"items": list(self.datasets.values())})
        if path == "/api/v1/datasets" and method == "POST":
            dataset = {"id": str(uuid.uuid4()), "name": body["name"], "workspace_id": body["workspace_id"],
                       "fields": [], "questions": []}
            self.datasets[dataset["id"]] = dataset
            self.records[dataset["id"]] = []
            return httpx.Response(201, json=dataset)
        parts = path.split("/")
        dataset_id = parts[4] if len(parts) > 4 else ""
        if path.endswith(("/fields", "/questions", "/metadata-properties")) and method == "POST":
            self.datasets[dataset_id].setdefault(parts[-1], []).append(body)
            return httpx.Response(201, json={"id": str(uuid.uuid4()), **body})
        if path.endswith("/publish"):
            return httpx.Response(200, json=self.datasets[dataset_id])
        if path.endswith("/records/bulk") and method == "POST":
            created = [{"id": str(uuid.uuid4()), "responses": [], **item} for item in body["items"]]
            self.records[dataset_id].extend(created)
            return httpx.Response(200, json={"items": created})
        if path.endswith("/records") and method == "GET":
            if not request.url.params.get("include"):  # as the real server: 422 for an empty include
                return httpx.Response(422, json={"detail": "'include' query parameter must be of the form 'key1,key2'"})
            offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
            return httpx.Response(200, json={"items": self.records[dataset_id][offset:offset + limit]})
        return httpx.Response(404, json={"detail": f"{method} {path} is not served by the fake"})

    def answer(self, user: str, choose) -> None:
        """Submit a response from ``user`` to every record: ``choose(record) -> 'response_1'|'response_2'|'tie'``."""
        for records in self.records.values():
            for record in records:
                record["responses"].append({"user_id": user, "status": "submitted",
                                            "values": {"preference": {"value": choose(record)}}})


def test_human_push_pull_round_trip(tmp_path):
    from rlhf.labeling import ArgillaHTTP
    from rlhf.stages.eval_human import HumanEvalConfig, run_pull, run_push
    from tests.eval_fixtures import make_eval_folder

    eval_dir = make_eval_folder(tmp_path / "runs", n_prompts=12)
    fake = FakeArgilla()
    http = ArgillaHTTP("http://argilla.test", "owner-key", retries=0, transport=httpx.MockTransport(fake))
    cfg = HumanEvalConfig(run={"root": str(tmp_path / "runs"), "seed": 3}, eval_dir=str(eval_dir),
                          policy_a="dpo", dataset="ab-test")
    items_file = run_push(cfg, http=http)
    saved = json.loads(items_file.read_text())
    (dataset,) = fake.datasets.values()
    (records,) = fake.records.values()
    shown = [item for item in saved["items"] if not item["auto_tie"]]
    assert dataset["name"] == "ab-test" and len(records) == len(shown) == 12
    assert [q["name"] for q in dataset["questions"]] == ["preference", "comment"]
    for record in records:  # blind: no policy name reaches Argilla
        assert "dpo" not in json.dumps(record) and "sft" not in json.dumps(record)
    run_push(cfg, http=http)  # idempotent: nothing new is logged
    assert len(fake.records[dataset["id"]]) == 12

    slot_of_a = {item["item_id"]: item["a_slot"] for item in saved["items"]}
    fake.answer("ann-1", lambda r: f"response_{slot_of_a[r['external_id']]}")  # always prefers dpo
    fake.answer("ann-2", lambda r: "response_1")  # always clicks the first slot
    path, result = run_pull(cfg, http=http)
    assert result.votes == 24 and result.annotators == 2
    assert result.per_annotator["ann-1"]["win_rate_a"] == 1.0
    assert result.per_annotator["ann-2"]["slot1_rate"] == 1.0
    assert result.ci_low <= result.win_rate <= result.ci_high
    written = json.loads(path.read_text())
    assert written["policy_a"] == "dpo" and written["policy_b"] == "sft" and written["dataset"] == "ab-test"
    assert len((path.parent / "votes.jsonl").read_text().splitlines()) == 24


@pytest.mark.slow
def test_human_push_pull_against_the_real_service(tmp_path):
    """The same round trip against the embedded Argilla service, an annotator answering through the
    endpoint the UI uses."""
    import os
    import socket

    from rlhf.labeling import (
        ArgillaHTTP,
        ServiceConfig,
        create_user,
        find_dataset,
        iter_records,
        start_service,
        stop_service,
        submit_response,
    )
    from rlhf.labeling.credentials import load_or_create_secrets
    from rlhf.labeling.state import ServiceLayout
    from rlhf.stages.eval_human import HumanEvalConfig, run_pull, run_push
    from tests.eval_fixtures import make_eval_folder

    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: run 'apt-get install -y redis-server'")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = ServiceConfig(home=str(tmp_path / "labeling"), port=port, start_timeout_s=300)
    status = start_service(service)
    try:
        owner = load_or_create_secrets(ServiceLayout(service.home_path()).secrets).owner_api_key
        http = ArgillaHTTP(str(status.url), owner, timeout_s=60.0)
        eval_dir = make_eval_folder(tmp_path / "runs", n_prompts=6)
        cfg = HumanEvalConfig(run={"root": str(tmp_path / "runs")}, eval_dir=str(eval_dir), policy_a="dpo",
                              dataset="ab-live", min_submitted=1)
        items = json.loads(run_push(cfg, http=http).read_text())["items"]
        run_push(cfg, http=http)
        dataset_id = find_dataset(http, "ab-live", cfg.workspace)
        records = list(iter_records(http, dataset_id, include="responses"))
        assert len(records) == len(items) == 6
        rater = create_user(http, "rater-ab", role="annotator", workspaces=(cfg.workspace,))
        slot_of_a = {item["item_id"]: item["a_slot"] for item in items}
        with ArgillaHTTP(str(status.url), rater.api_key, timeout_s=60.0) as as_rater:
            for record in records:  # the rater always prefers the dpo reply, wherever it is shown
                submit_response(as_rater, record["id"],
                                {"preference": {"value": f"response_{slot_of_a[record['external_id']]}"}})
        _, result = run_pull(cfg, http=http)
        assert result.votes == 6 and result.annotators == 1 and result.win_rate == 1.0
        assert result.slot1_rate == 0.5  # A was shown first in exactly half of the items
        http.close()
    finally:
        stop_service(service)
