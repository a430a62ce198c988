"""``rlhf label simulate`` (stage ``label_simulate``): bot annotators that work a pushed round exactly as people do in the UI.

Each bot is a real Argilla annotator account (``<prefix>-<role>-<i>``, created when missing and added to the
round's workspace). It works with its own API key and only the endpoints the UI calls for an annotator:
its queue (``POST /api/v1/me/datasets/{id}/records/search``: records still pending that it has not
answered, in its own order) and ``POST /api/v1/me/responses/bulk`` to submit a page of them at once, as the
UI's bulk view does. So the task distribution decides who sees what, exactly as for people, and people can
annotate the same dataset at the same time. Bots take turns, ``batch`` records each, until every queue is
empty (or ``max_per_bot`` is reached).

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

from rlhf.configs.label import LabelSimulateConfig
from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.loop.common import connect, read_push
from rlhf.labeling.loop.simulate import BotResult, bot_client, bot_profiles, bot_values
from rlhf.labeling.responses import pending_queue, submit_responses
from rlhf.utils.callables import load_callable

__all__ = ["LabelSimulateConfig", "run_simulate"]


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
            clients[profile.username] = bot_client(owner, profile, push.workspace)
        answered: dict[str, set[str]] = {p.username: set() for p in profiles}
        active = list(profiles)
        while active:
            for profile in list(active):
                client = clients[profile.username]
                limit = cfg.batch if not cfg.max_per_bot else min(cfg.batch, cfg.max_per_bot - done[profile.username])
                page, _ = pending_queue(client, push.dataset_id, limit)
                fresh = [r for r in page if r["id"] not in answered[profile.username]]
                ranked = [(record["id"], bot_values(profile, record, push, questions, rubric, random.Random(
                    f"{cfg.run.seed}:{profile.username}:{record['external_id']}")), "submitted") for record in fresh]
                submit_responses(client, ranked)
                answered[profile.username].update(record_id for record_id, _, _ in ranked)
                done[profile.username] += len(ranked)
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
