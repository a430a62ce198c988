"""Building blocks of ``rlhf label simulate`` (the stage's recipe is :mod:`rlhf.stages.label_simulate`, which
describes the bots): bot profiles, a bot's ranking and answers, and its own Argilla client.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rlhf.core.errors import UserError
from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.loop.common import PushInfo
from rlhf.labeling.responses import ranking_value
from rlhf.labeling.users import add_to_workspace, create_user, find_user, user_api_key

__all__ = ["BotProfile", "BotResult", "bot_client", "bot_profiles", "bot_ranking", "bot_values"]

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


def bot_client(owner: ArgillaHTTP, profile: BotProfile, workspace: str) -> ArgillaHTTP:
    """The bot's own client: its account is created when missing and joins ``workspace``."""
    if find_user(owner, profile.username) is None:
        create_user(owner, profile.username, role="annotator", workspaces=(workspace,))
    else:
        add_to_workspace(owner, profile.username, workspace)
    return ArgillaHTTP(owner.api_url, user_api_key(owner, profile.username), retries=owner.retries)
