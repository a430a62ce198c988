"""The Ray Serve application built from the config: replicas, autoscaling and resources (the app itself runs
on real Ray Serve in tests/labeling/test_feedback_loop.py)."""

from __future__ import annotations

import pytest

from rlhf.core.config import ConfigError
from rlhf.serving.deployment import build_app
from rlhf.stages import load_config


def _deployment(*overrides: str):
    return build_app(load_config(None, list(overrides), expect_stage="serve").sections())._bound_deployment


def test_fixed_replicas_and_resources_come_from_the_config():
    dep = _deployment("deployment.num_replicas=3", "deployment.num_cpus=0.5", "deployment.max_ongoing_requests=4")
    assert dep.num_replicas == 3 and dep.max_ongoing_requests == 4
    assert dep.ray_actor_options["num_cpus"] == 0.5 and dep.ray_actor_options["num_gpus"] == 0
    assert dep._deployment_config.autoscaling_config is None


def test_autoscaling_comes_from_the_config():
    dep = _deployment("deployment.autoscaling=true", "deployment.min_replicas=1", "deployment.max_replicas=4",
                      "deployment.target_ongoing_requests=3")
    auto = dep._deployment_config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (1, 4, 3.0)


@pytest.mark.parametrize(("overrides", "needle"), [
    (["deployment.autoscaling=true", "deployment.min_replicas=3", "deployment.max_replicas=2"], "above max_replicas"),
    (["auth.admin_key=chat-demo-key"], "also a chat key"),
    (["store.scrubber=none"], "would store personal data"),
    (["store.url=mysql://x"], "neither sqlite"),
    (["deployment.replicas=2"], "did you mean 'num_replicas'"),
])
def test_the_serve_config_refuses_contradictions_in_one_line(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides, expect_stage="serve")
