"""Joining or starting Ray, and the schema every Ray stage shares for it.

:class:`ClusterSettings` (which cluster, and the object store of a local one) is the common part of the
``resources`` section of the Ray stages: the RM and DPO stages add their Ray Train workers
(:class:`rlhf.trainers.ray_train.TrainerResources`), PPO its roles (:class:`rlhf.roles.launcher.ResourcesConfig`);
both describe an actor's reservation with :class:`RoleResources`. :func:`connect_ray` is the one bootstrap:
join ``address`` or ``$RAY_ADDRESS``, or start a small local Ray. Ray is imported only when called.
"""

from __future__ import annotations

import os

from pydantic import Field, model_validator

from rlhf.core.config import StrictModel

__all__ = ["WORKER_ENV_VARS", "ClusterSettings", "RoleResources", "connect_ray", "worker_env"]

# Variables every Ray worker inherits from the driver (caches, offline hub, quiet progress bars).
WORKER_ENV_VARS = ("RLHF_CACHE", "HF_HUB_OFFLINE", "HF_HOME", "TORCH_EXTENSIONS_DIR", "TOKENIZERS_PARALLELISM",
                   "TQDM_DISABLE")
MIB = 1024 * 1024


class ClusterSettings(StrictModel):
    """Which Ray cluster a stage runs on."""

    address: str | None = Field(None, description="Ray cluster to join (e.g. ray://head:10001 or auto); "
                                "omit to use $RAY_ADDRESS or start a local one")
    object_store_mb: int = Field(400, ge=80, description="object store of a locally started Ray (MiB)")


class RoleResources(StrictModel):
    """What one actor (a Ray Train worker, a PPO role's rank) reserves."""

    num_cpus: float = Field(1.0, ge=0, description="CPU cores (also the actor's torch threads, at least 1)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs (fractions share a GPU between colocated roles)")
    custom: dict[str, float] = Field(default_factory=dict,
                                     description="custom Ray resources, e.g. {learner_node: 0.01} to pin to nodes")

    @model_validator(mode="after")
    def _something(self) -> RoleResources:
        if self.num_cpus + self.num_gpus + sum(self.custom.values()) <= 0:
            raise ValueError("a role must reserve some resource (num_cpus, num_gpus or custom)")
        return self

    def as_dict(self) -> dict[str, float]:
        """Ray's resource dict (``CPU``, ``GPU`` and the custom names), zero entries left out."""
        out = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom}
        return {k: v for k, v in out.items() if v > 0}

    @property
    def threads(self) -> int:
        """Torch threads of an actor with this reservation."""
        return max(1, int(self.num_cpus))


def worker_env() -> dict[str, str]:
    """Environment variables every actor inherits from the driver."""
    return {key: os.environ[key] for key in WORKER_ENV_VARS if key in os.environ}


def connect_ray(address: str | None, num_cpus: int, object_store_mb: int) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``) or start a local Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    env = worker_env()
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, runtime_env={"env_vars": env}, log_to_driver=True)
        return False
    # address="local": a new instance even when another local Ray runs (ray.init() alone would join it).
    # Without the dashboard Ray's state API is down, and Ray Train's placement-group cleaner would warn about
    # it every second: a local Ray logs errors only.
    ray.init(address="local", num_cpus=max(2, num_cpus), include_dashboard=False,
             object_store_memory=object_store_mb * MIB,
             runtime_env={"env_vars": env}, log_to_driver=True, logging_config=ray.LoggingConfig(log_level="ERROR"))
    return True
