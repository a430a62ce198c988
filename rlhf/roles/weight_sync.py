"""Weight sync from the policy learner to the rollout workers, and the check that it happened.

Transport (:mod:`rlhf.rollout.weight_transfer`). The learner's rank 0 and the rollout workers form their own process group (learner rank 0, then
each worker's ranks in turn: one for a transformers engine, one per tensor-parallel GPU for vLLM; see
:func:`rank_layout`), built from a ``TCPStore`` and a ``ProcessGroupGloo`` (CPU) or ``ProcessGroupNCCL`` (GPU)
object, so it lives beside the learners' DeepSpeed default group instead of replacing it. The learner
broadcasts each tensor of :func:`rlhf.trainers.modeling.exported_weights` in a fixed order (the manifest, agreed
once); each worker receives into a fresh buffer and loads it at once, so no full copy is held. When the
group cannot be formed (``sync.method=auto``), the learner's weights travel through the Ray object store;
so they do when rollout workers share GPUs with the learner (NCCL cannot pair two ranks on one GPU).

Check. A sync that silently does nothing leaves the workers sampling from a stale policy (OpenRLHF #660,
verl #7495). After every sync each worker scores a fixed probe batch with ``logprobs`` and the learner
scores the same tokens; :func:`check_probe` raises :class:`WeightSyncError` when the largest difference
of any token's log-prob exceeds the tolerance.

The controller drives both over Ray actor handles with :func:`connect_sync_group`, :func:`sync_weights` and
:func:`check_sync`; the rest of this module runs inside the actors.
"""

from __future__ import annotations

from rlhf.rollout.weight_transfer import TensorSpec, WeightSyncError

__all__ = ["PROBE_TEMPERATURE", "WeightSyncError", "check_probe", "check_sync", "connect_sync_group",
           "probe_difference", "rank_layout", "sync_weights"]

# The post-sync probe compares log-probs at temperature 1: a weight difference shows at any temperature,
# and vLLM scores given tokens at temperature 1 only.
PROBE_TEMPERATURE = 1.0


def probe_difference(rollout: list[list[float]], learner: list[list[float]]) -> float:
    """Largest absolute difference between two sets of per-token log-probs of the same tokens."""
    if len(rollout) != len(learner) or any(len(a) != len(b) for a, b in zip(rollout, learner)):
        raise WeightSyncError("the probe log-probs of the rollout worker and the learner cover different tokens")
    return max((abs(a - b) for ra, rb in zip(rollout, learner) for a, b in zip(ra, rb)), default=0.0)


def check_probe(rollout: list[list[float]], learner: list[list[float]], tolerance: float, worker: int,
                step: int) -> float:
    """Raise :class:`WeightSyncError` when the worker's probe log-probs differ from the learner's.

    Returns the largest difference (for logging) when it is within ``tolerance``.
    """
    diff = probe_difference(rollout, learner)
    if not diff <= tolerance:
        raise WeightSyncError(
            f"after the weight sync of step {step}, rollout worker {worker} scores the probe batch up to "
            f"{diff:.3g} nats away from the learner (tolerance {tolerance:g}): its weights are stale or wrong; "
            "check the sync transport (sync.method) or raise sync.probe_tolerance for a lower-precision engine")
    return diff


# ---------------------------------------------------------------- driver side: the same over Ray actors


def rank_layout(ranks_per_worker: list[int]) -> tuple[list[int], int]:
    """The first sync-group rank of each rollout worker (after the learner's rank 0) and the group size."""
    offsets, next_rank = [], 1
    for ranks in ranks_per_worker:
        if ranks < 1:
            raise ValueError(f"a rollout worker must join the sync group with >= 1 rank, got {ranks}")
        offsets.append(next_rank)
        next_rank += ranks
    return offsets, next_rank


def connect_sync_group(policy: list, rollout: list, method: str, backend: str, timeout_s: float,
                       shares_gpu: bool = False) -> str:
    """Form the sync group of learner rank 0 and the rollout workers (Ray actor handles); returns the method
    in use: ``broadcast``, or ``object_store`` when asked for or (``auto``) when the group cannot form or
    would pair ranks on one GPU (``shares_gpu`` with NCCL)."""
    import ray

    from rlhf.core.errors import UserError

    if method == "object_store":
        return "object_store"
    if shares_gpu and backend == "nccl":
        if method == "broadcast":
            raise UserError("sync.method=broadcast cannot pair the learner with rollout workers on the same GPU "
                            "(NCCL needs one GPU per rank); use sync.method=auto or object_store")
        return "object_store"
    try:
        address, port = ray.get(policy[0].address.remote())
        offsets, world = rank_layout(ray.get([w.sync_ranks.remote() for w in rollout]))
        refs = [p.init_sync_group.remote(address, port, world, backend, timeout_s) for p in policy]
        refs += [w.init_sync_group.remote(address, port, offset, world, backend, timeout_s)
                 for offset, w in zip(offsets, rollout)]
        ray.get(refs, timeout=timeout_s + 30)
        return "broadcast"
    except (ray.exceptions.RayError, OSError) as err:  # the group could not form: the object store still works
        if method == "broadcast":
            raise UserError(f"the weight-sync group could not form ({type(err).__name__}: {err}); "
                            "use sync.method=auto or object_store") from None
        print(f"weight sync: the sync group failed ({type(err).__name__}); using the Ray object store")
        return "object_store"


def sync_weights(policy: list, rollout: list, method: str, manifest: list[TensorSpec], version: int) -> None:
    """Copy the policy learner's weights (those after policy step ``version``) into every rollout worker;
    raises unless each loaded all of them."""
    import ray

    if method == "broadcast":
        sends = [p.broadcast_weights.remote() for p in policy]
        loaded = ray.get([w.receive_weights.remote(manifest, version) for w in rollout])
        ray.get(sends)
    else:
        exports = [p.sync_payload.remote() for p in policy]
        loaded = ray.get([w.load_weights.remote(exports[0], version) for w in rollout])
        ray.get(exports[1:])
    if any(count != len(manifest) for count in loaded):
        raise WeightSyncError(f"rollout workers loaded {loaded} tensors, expected {len(manifest)} each")


def check_sync(policy: list, rollout: list, probe: tuple[list[list[int]], list[list[int]]], tolerance: float,
               step: int, temperature: float = PROBE_TEMPERATURE) -> float:
    """The post-sync probe check over every worker; returns the largest difference (raises beyond it)."""
    import ray

    learner_refs = [p.probe_logprobs.remote(*probe, temperature) for p in policy]
    workers = ray.get([w.logprobs.remote(*probe, temperature) for w in rollout])  # both sides score at once
    learner = ray.get(learner_refs)[0]
    return max(check_probe(lp, learner, tolerance, i, step) for i, lp in enumerate(workers))
