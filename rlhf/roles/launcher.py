"""Ray wiring of the PPO roles: resources from config, one placement group, one actor per role rank.

The launcher only wires; it holds no training logic. Every role's actors get a bundle of the placement
group: roles listed together in ``resources.colocate`` share bundles (bundle ``i`` holds rank ``i`` of each
of them, sized as the sum of their requests), every other role gets bundles of its own. The group's
``strategy`` decides node placement (``PACK`` fills a node first, ``STRICT_SPREAD`` puts every bundle on a
different node); ``custom`` resources pin a role to nodes that advertise them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from rlhf.core.cluster import ClusterSettings, RoleResources
from rlhf.core.errors import UserError

__all__ = ["ROLES", "ResourcesConfig", "Role", "Roles", "plan_bundles", "start_actor",
           "start_placement_group"]

Role = Literal["rollout", "policy", "critic", "reference", "reward"]
ROLES: tuple[Role, ...] = ("rollout", "policy", "critic", "reference", "reward")


class ResourcesConfig(ClusterSettings):
    """Actors per role, what each reserves, and how they are placed (and, from :class:`ClusterSettings`,
    which Ray cluster)."""

    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="placement-group strategy over all bundles")
    rollout_workers: int = Field(1, ge=1, description="rollout worker actors (each holds a full engine)")
    learner_workers: int = Field(1, ge=1, description="data-parallel ranks of the policy (and critic) learner")
    rollout: RoleResources = Field(default_factory=RoleResources, description="per rollout worker")
    policy: RoleResources = Field(default_factory=RoleResources, description="per policy learner rank")
    critic: RoleResources = Field(default_factory=RoleResources, description="per critic learner rank")
    reference: RoleResources = Field(default_factory=RoleResources, description="the reference model")
    reward: RoleResources = Field(default_factory=RoleResources, description="the reward model or function")
    colocate: list[list[Role]] = Field(default_factory=list,
                                       description="groups of roles that share bundles, e.g. [[policy, reference]]")
    ready_timeout_s: float = Field(120.0, gt=0, description="how long to wait for the placement group")

    @model_validator(mode="after")
    def _colocation(self) -> ResourcesConfig:
        seen: set[str] = set()
        for group in self.colocate:
            for role in group:
                if role in seen:
                    raise ValueError(f"resources.colocate lists role '{role}' twice; a role belongs to one group")
                seen.add(role)
        return self

    def count(self, role: Role) -> int:
        """Actors of ``role``."""
        return {"rollout": self.rollout_workers, "policy": self.learner_workers,
                "critic": self.learner_workers}.get(role, 1)

    def cpus(self) -> int:
        """CPU cores every role's actors reserve together, rounded up (the size of a locally started Ray)."""
        return math.ceil(sum(getattr(self, role).num_cpus * self.count(role) for role in ROLES) - 1e-9)


def plan_bundles(resources: ResourcesConfig, roles: tuple[Role, ...]) -> tuple[list[dict[str, float]],
                                                                              dict[Role, list[int]]]:
    """The placement group's bundles and, per role, the bundle index of each of its actors.

    ``roles`` are the roles this run starts (a run without a critic leaves it out of every group).
    """
    units: list[list[Role]] = [[r for r in group if r in roles] for group in resources.colocate]
    units = [u for u in units if u]
    grouped = {r for u in units for r in u}
    units += [[r] for r in roles if r not in grouped]
    bundles: list[dict[str, float]] = []
    where: dict[Role, list[int]] = {}
    for unit in units:
        size = max(resources.count(r) for r in unit)
        first = len(bundles)
        for i in range(size):
            bundle: dict[str, float] = {}
            for role in unit:
                if i < resources.count(role):
                    for key, value in getattr(resources, role).as_dict().items():
                        bundle[key] = bundle.get(key, 0.0) + value
            bundles.append(bundle)
        for role in unit:
            where[role] = [first + i for i in range(resources.count(role))]
    return bundles, where


def start_placement_group(bundles: list[dict[str, float]], strategy: str, timeout_s: float):
    """Create the placement group and wait until every bundle is reserved."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group(bundles, strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        raise UserError(f"Ray could not reserve {bundles} with strategy {strategy} in {timeout_s:.0f} s "
                        f"(cluster has {ray.cluster_resources()}); lower resources.* or add nodes")
    return group


def start_actor(cls: type, group, bundle: int, request: RoleResources, env: dict[str, str], *args: Any,
                **kwargs: Any):
    """Start ``cls(*args, **kwargs)`` as a Ray actor in bundle ``bundle`` of ``group``."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    threads = str(max(1, int(request.num_cpus)))
    return ray.remote(cls).options(
        num_cpus=request.num_cpus, num_gpus=request.num_gpus, resources=request.custom or None,
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=bundle),
        runtime_env={"env_vars": {**env, "OMP_NUM_THREADS": threads}},
    ).remote(*args, **kwargs)


@dataclass
class Roles:
    """Handles of every started actor (``critic`` is empty without GAE)."""

    group: Any
    rollout: list[Any] = field(default_factory=list)
    policy: list[Any] = field(default_factory=list)
    critic: list[Any] = field(default_factory=list)
    reference: Any = None
    reward: Any = None

    def all(self) -> list[Any]:
        return [*self.rollout, *self.policy, *self.critic, self.reference, self.reward]

    def shutdown(self) -> None:
        """Kill every actor and release the placement group."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.all():
            if actor is not None:
                ray.kill(actor)
        remove_placement_group(self.group)

