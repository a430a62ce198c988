"""``rlhf label simulate``: bot annotators that work a pushed round exactly as people do in the UI.

Each bot is a real Argilla annotator account (``<prefix>-<role>-<i>``, created when missing and added to the
round's workspace). It works with its own API key and only the endpoints the UI calls for an annotator:
its queue (``POST /api/v1/me/datasets/{id}/records/search``: records still pending that it has not
answered, in its own order) and ``POST /api/v1/records/{id}/responses`` to submit. So the task distribution
decides who sees what, exactly as for people, and people can annotate the same dataset at the same time.
Bots take turns, ``batch`` records each, until every queue is empty (or ``max_per_bot`` is reached).

How a bot ranks the K responses of a record (random draws seeded by run seed, username and record key, so
a run is reproducible whatever the interleaving):

* **honest**: scores each response with the rubric (``module:function`` taking prompt and reply, the demo
  world's gold rubric by default) plus Gaussian noise of std ``noise``, and orders by score;
* **biased**: like honest, but with probability ``position_bias`` moves the slot-A response to the top;
* **careless**: a uniformly random order.

In every order, each pair of neighbours is merged into one rank (a tie) with probability ``tie_rate``. Bots
also answer the template's optional questions where present: ``best_rating`` (1-5 from the best score)
and the ``all_bad`` flag when every response scores below 0.35.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rlhf.core.errors import UserError
from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.loop.common import PushInfo, connect, read_push
from rlhf.labeling.loop.config import LabelSimulateConfig
from rlhf.labeling.responses import pending_queue, ranking_value, submit_response
from rlhf.labeling.users import add_to_workspace, create_user, find_user, user_api_key
from rlhf.utils.callables import load_callable

__all__ = ["BotProfile", "BotResult", "bot_profiles", "bot_ranking", "bot_values", "run_simulate"]

Role = Literal["honest", "careless", "biased"]
ALL_BAD_BELOW = 0.35


@dataclass(frozen=True)
class BotProfile:
    """One bot annotator and how it ranks."""

    username: str
    role: Role
    noise: float
    tie_rate: float
    position_bias: float


@dataclass(frozen=True)
class BotResult:
    """What one bot did in a run."""

    username: str
    role: Role
    submitted: int


def bot_profiles(bots: int, careless_share: float, biased_share: float, prefix: str, noise: float,
                 tie_rate: float, position_bias: float) -> list[BotProfile]:
    """The bot population: ``round(bots * share)`` careless and biased bots, the rest honest."""
    careless, biased = round(bots * careless_share), round(bots * biased_share)
    if careless + biased > bots:
        raise UserError(f"{careless} careless and {biased} biased bots do not fit in {bots}; lower a share")
    roles: list[Role] = ["careless"] * careless + ["biased"] * biased + ["honest"] * (bots - careless - biased)
    counts: dict[str, int] = {}
    out = []
    for role in roles:
        counts[role] = counts.get(role, 0) + 1
        out.append(BotProfile(f"{prefix}-{role}-{counts[role]}", role, noise, tie_rate, position_bias))
    return out


def bot_ranking(profile: BotProfile, prompt: str, slots: Sequence[tuple[str, str]],
                rubric: Callable[[str, str], float], rng: random.Random) -> tuple[list[list[str]], float]:
    """The bot's ranking of ``slots`` ((slot name, text), slot A first) as groups of slot names, best first;
    and the best rubric score it perceived (careless bots: the mean of the rubric scores)."""
    names = [name for name, _ in slots]
    scores = {name: float(rubric(prompt, text)) for name, text in slots}
    if profile.role == "careless":
        order = names[:]
        rng.shuffle(order)
        best = sum(scores.values()) / len(scores)
    else:
        noisy = {name: score + rng.gauss(0.0, profile.noise) for name, score in scores.items()}
        order = sorted(names, key=lambda name: -noisy[name])
        if profile.role == "biased" and rng.random() < profile.position_bias:
            order.remove(names[0])
            order.insert(0, names[0])
        best = max(scores.values())
    groups = [[order[0]]]
    for name in order[1:]:
        if rng.random() < profile.tie_rate:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups, best


def bot_values(profile: BotProfile, record: dict[str, Any], push: PushInfo, questions: set[str],
               rubric: Callable[[str, str], float], rng: random.Random) -> dict[str, Any]:
    """The response values a bot submits for one record (ranking, and the optional questions it knows)."""
    fields = record["fields"]
    slots = [(name, str(fields[name])) for name in push.slot_fields]
    groups, best = bot_ranking(profile, str(fields[push.prompt_field]), slots, rubric, rng)
    values: dict[str, Any] = {push.ranking_question: {"value": ranking_value(groups)}}
    if "best_rating" in questions:
        values["best_rating"] = {"value": 1 + min(4, max(0, round(4 * best)))}
    if "flags" in questions and best < ALL_BAD_BELOW and profile.role != "careless":
        values["flags"] = {"value": ["all_bad"]}
    return values


def _bot_client(owner: ArgillaHTTP, profile: BotProfile, workspace: str) -> ArgillaHTTP:
    """The bot's own client: its account is created when missing and joins ``workspace``."""
    if find_user(owner, profile.username) is None:
        create_user(owner, profile.username, role="annotator", workspaces=(workspace,))
    else:
        add_to_workspace(owner, profile.username, workspace)
    return ArgillaHTTP(owner.api_url, user_api_key(owner, profile.username), retries=owner.retries)


def run_simulate(cfg: LabelSimulateConfig, http: ArgillaHTTP | None = None) -> list[BotResult]:
    """Let the configured bots annotate the push's dataset until their queues are empty; what each did."""
    push = read_push(cfg.push)
    rubric = load_callable(cfg.rubric)
    profiles = bot_profiles(cfg.bots, cfg.careless_share, cfg.biased_share, cfg.username_prefix, cfg.noise,
                            cfg.tie_rate, cfg.position_bias)
    owner = http if http is not None else connect(cfg.argilla, cfg.service)
    clients: dict[str, ArgillaHTTP] = {}
    done = {p.username: 0 for p in profiles}
    try:
        questions = {q["name"] for q in owner.get(f"/api/v1/datasets/{push.dataset_id}/questions")["items"]}
        for profile in profiles:
            clients[profile.username] = _bot_client(owner, profile, push.workspace)
        answered: dict[str, set[str]] = {p.username: set() for p in profiles}
        active = list(profiles)
        while active:
            for profile in list(active):
                client = clients[profile.username]
                limit = cfg.batch if not cfg.max_per_bot else min(cfg.batch, cfg.max_per_bot - done[profile.username])
                page, _ = pending_queue(client, push.dataset_id, limit)
                fresh = [r for r in page if r["id"] not in answered[profile.username]]
                for record in fresh:
                    rng = random.Random(f"{cfg.run.seed}:{profile.username}:{record['external_id']}")
                    values = bot_values(profile, record, push, questions, rubric, rng)
                    submit_response(client, record["id"], values, "submitted")
                    answered[profile.username].add(record["id"])
                    done[profile.username] += 1
                exhausted = cfg.max_per_bot and done[profile.username] >= cfg.max_per_bot
                if not fresh or exhausted:
                    active.remove(profile)
    finally:
        for client in clients.values():
            client.close()
        if http is None:
            owner.close()
    results = [BotResult(p.username, p.role, done[p.username]) for p in profiles]
    for r in results:
        print(f"label simulate: {r.username} ({r.role}) submitted {r.submitted}")
    return results
