"""The loop closed end to end: the SFT policy served on Ray Serve (two replicas), simulated customers chatting
through the ``openai`` client, every feedback event stored (as many as sent, none lost, none duplicated), the
export of the unhappy conversations' prompts, a round (``rlhf pipeline`` on the real labeling service) started
from the served policy on those prompts, and the new policy beating the served one on them by the gold rubric.
The feedback store also runs on PostgreSQL (a throwaway local cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.stages import load_config
from tests.labeling.conftest import free_port

pytestmark = pytest.mark.slow


def _serve(policy: Path, store_url: str):
    import ray
    from ray import serve

    from rlhf.stages.serve import start_serve

    cfg = load_config(None, [f"model.path={policy}", f"store.url={store_url}", f"http.port={free_port()}",
                             "deployment.num_replicas=2", "deployment.num_cpus=0.5", "deployment.torch_threads=1",
                             "limits.requests_per_minute=1000"], expect_stage="serve")
    url = start_serve(cfg)
    replicas = serve.status().applications["rlhf-chat"].deployments["chat"].replica_states
    return url, replicas, ray


def _gold_on(prompts: list[str], policy: str, seed: int) -> list[float]:
    from rlhf.models.loader import resolve_model_path
    from rlhf.rollout.transformers_engine import TransformersRolloutEngine
    from rlhf.rollout.types import SamplingParams
    from rlhf.world.rubric import gold_rubric

    engine = TransformersRolloutEngine.from_pretrained(resolve_model_path(policy), device="cpu")
    samples = engine.generate(prompts, SamplingParams(n=4, temperature=0.7, max_new_tokens=64), seed=seed)
    return [gold_rubric(s.prompt, s.text) for s in samples]


def test_served_feedback_feeds_a_round_that_beats_the_served_policy(sft_policy, labeling_service, tmp_path):
    from rlhf.data.prompts import normalize_text
    from rlhf.serving.customers import HUMAN_PLEASE, simulate_customers
    from rlhf.serving.store import FeedbackStore
    from rlhf.stages.feedback import run_export
    from rlhf.stages.pipeline import run_pipeline
    from rlhf.stages.serve import stop_serve

    store_url = f"sqlite:///{tmp_path / 'feedback.db'}"
    url, replicas, ray = _serve(sft_policy, store_url)
    try:
        assert replicas == {"RUNNING": 2}
        log = simulate_customers(url, "chat-demo-key", conversations=60, seed=7, max_tokens=64, retry_share=0.3)
    finally:
        stop_serve()
        ray.shutdown()

    # Every feedback event sent is stored once: none lost, none duplicated by the retried POSTs.
    store = FeedbackStore(store_url)
    stored = store.feedback()
    explicit = sorted(e["event_id"] for e in stored if e["source"] == "explicit")
    assert log.retries > 0 and explicit == sorted(event_id for event_id, _ in log.events)
    implicit = {kind: sum(1 for e in stored if e["kind"] == kind) for kind in ("rephrase", "ask_human")}
    assert implicit == log.implicit_expected()
    assert sorted(r["id"] for r in store.replies()) == sorted(t.reply_id for t in log.turns)

    export = run_export(load_config(None, [f"store.url={store_url}", f"export.out={tmp_path / 'export.jsonl'}"],
                                    expect_stage="feedback"))
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    unhappy = {normalize_text(t.question) for t in log.turns if t.action != "thumbs_up" and t.question != HUMAN_PLEASE}
    assert {r["prompt"] for r in rows} == unhappy and len(rows) >= 40

    root = tmp_path / "runs"
    sections = {
        "run": {"root": str(root), "seed": 0}, "rounds": 1, "sft_stage": False, "algorithms": ["dpo"],
        "keep_service": True, "label": {"service": {"home": str(labeling_service.home)}},
        "sft": {"model": {"name_or_path": str(sft_policy)}},
        "prepare": {"source": {"kind": "file", "path": str(export)}, "split": {"eval_fraction": 0.2}},
        "generate": {"prompts": {"limit": 500}, "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 64}},
        "label_push": {"min_submitted": 2},
        "label_simulate": {"bots": 2, "noise": 0.05, "batch": 20},
        "rm": {"train": {"epochs": 1, "lr": 5.0e-4, "save_steps": 100}, "eval": {"best_of_n_prompts": 0}},
        "dpo": {"data": {"train_pairs": "best_vs_worst"}, "loss": {"beta": 0.1, "sft_weight": 1.0},
                "train": {"lr": 5.0e-4, "epochs": 3, "batch_size": 8, "save_steps": 100}, "eval": {"prompts": 0}},
        "eval": {"generation": {"max_new_tokens": 64}, "best_of_n": {"n": 0}, "stats": {"n_bootstrap": 500}},
    }
    (root.mkdir())
    (root / "pipeline.yaml").write_text(json.dumps(sections))
    run_pipeline(load_config(root / "pipeline.yaml", [], expect_stage="pipeline"))
    summary = json.loads((root / "pipeline-summary.json").read_text())
    new_policy = summary["rounds"][0]["policies"]["dpo-r1"]

    # The new policy's gold score on the exported prompts beats the served policy's (same sampling seed; measured
    # +0.16 and +0.13 mean gold, 0.38 -> 0.54 and 0.40 -> 0.52, on 58 exported prompts at two sampling seeds).
    prompts = [r["prompt"] for r in rows]
    served, new = _gold_on(prompts, str(sft_policy), seed=11), _gold_on(prompts, new_policy, seed=11)
    gain = sum(new) / len(new) - sum(served) / len(served)
    assert gain >= 0.05, (sum(served) / len(served), sum(new) / len(new))


def test_the_feedback_store_runs_on_postgresql(postgres_cluster):
    from rlhf.serving.export import export_rows
    from rlhf.serving.store import FeedbackStore, ReplyRecord

    url = postgres_cluster.url.replace("postgresql://", "postgresql+psycopg://")
    store = FeedbackStore(url)
    store.add_reply(ReplyRecord(id="pg-1", conversation_id="c", turn=1, user="ana", model="m",
                                messages=[{"role": "user", "content": "Where is my order? Call 07700 900123"}],
                                reply="It ships today.", category="order_status", latency_ms=10.0, prompt_tokens=5,
                                completion_tokens=4, finish_reason="stop"))
    assert store.add_feedback("pg-1", "thumbs_down", event_id="e")[1] is False
    assert store.add_feedback("pg-1", "thumbs_down", event_id="e")[1] is True
    (row,) = export_rows(store, 0, 4e9)
    assert "07700 900123" not in row["prompt"] and row["metadata"]["signals"] == {"thumbs_down": 1}
    assert store.forget("ana")["replies"] == 1 and store.replies() == []
