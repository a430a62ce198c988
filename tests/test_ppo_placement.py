"""Two Ray nodes on this machine (``ray.cluster_utils.Cluster``): the learner side and the rollout workers
land on different nodes by placement-group strategy, and REINFORCE++ steps complete with the weight sync
broadcast between the nodes."""

from __future__ import annotations

import json

import pytest

from rlhf.stages import load_config

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


@pytest.fixture
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    from rlhf.core.cluster import worker_env

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 100 * MIB,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=100 * MIB)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env={"env_vars": worker_env()},
             logging_config=ray.LoggingConfig(log_level="ERROR"))
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_learners_and_rollout_workers_on_different_nodes(two_nodes, tmp_path):
    import ray

    from rlhf.stages.ppo import run_ppo

    cfg = load_config(None, [
        f"run.root={tmp_path}", "reward.function=rlhf.world.demo:gold_rubric", "algorithm.advantage=reinforce_pp",
        "rollout.prompts_per_step=4", "rollout.n=2", "rollout.max_new_tokens=8", "learner.micro_batch_size=4",
        "algorithm.mini_batch_size=8", "learner.lr=1e-3", "train.steps=2", "eval.prompts=0", "data.demo_prompts=16",
        "train.progress=false", "sync.method=broadcast", "resources.strategy=STRICT_SPREAD",
        "resources.colocate=[[policy, reference, reward]]", "resources.reference.num_cpus=0.5",
        "resources.reward.num_cpus=0.5",
    ], expect_stage="ppo")
    run_dir = run_ppo(cfg)  # type: ignore[arg-type]
    placement = json.loads((run_dir / "placement.json").read_text())
    learner_nodes = set(placement["policy"]) | set(placement["reference"]) | set(placement["reward"])
    rollout_nodes = set(placement["rollout"])
    assert len(learner_nodes) == 1 and len(rollout_nodes) == 1 and learner_nodes != rollout_nodes
    assert learner_nodes | rollout_nodes <= {node["NodeID"] for node in ray.nodes()}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "rollout/score_mean" in r] == [1, 2]
    assert all(r["rollout/sync_probe_diff"] <= 1e-3 for r in rows if "rollout/sync_probe_diff" in r)
