"""The preference loop without a server: slot maps, honeypots, the push plan, bot rankings, pseudonyms, pairs."""

from __future__ import annotations

import itertools
import json
import os
import random
import stat
from collections import Counter
from pathlib import Path

import pytest

from rlhf.core.config import ConfigError
from rlhf.core.errors import UserError
from rlhf.data.candidates import candidate_id
from rlhf.data.pii import load_scrubber
from rlhf.labeling.config import ServiceConfig
from rlhf.labeling.loop.common import PushInfo, load_pseudonym_key, pseudonym
from rlhf.labeling.loop.honeypots import Honeypot, demo_honeypots, honeypot_records, load_honeypots
from rlhf.labeling.loop.pull import build_pairs, response_row, responses_digest, votes_from_rows
from rlhf.labeling.loop.push import plan_records, template_layout
from rlhf.labeling.loop.simulate import BotProfile, bot_profiles, bot_ranking
from rlhf.labeling.loop.slots import (
    SlotRecord,
    adopt_server_order,
    read_slot_map,
    record_key,
    shuffle_slots,
    write_slot_map,
)
from rlhf.labeling.loop.status import AnnotatorProgress, RoundStatus
from rlhf.labeling.templates import load_template
from rlhf.preferences.votes import RankingVote
from rlhf.stages import load_config
from rlhf.world.demo import gold_rubric

SLOTS = ("response_1", "response_2", "response_3", "response_4")
NO_SCRUB = load_scrubber("none")
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "label"


def slot_record(key="r1", slots=("a", "b", "c", "d"), honeypot=False, answer=None):
    return SlotRecord(external_id=key, prompt_id="p-" + key, prompt="Where is my order?", slots=tuple(slots),
                      texts={c: f"text {c}" for c in slots}, honeypot=honeypot, answer=answer,
                      candidates={c: {"policy": "pol-" + c} for c in slots})


def push_info() -> PushInfo:
    return PushInfo.from_json(Path("/push"), {
        "dataset": "d", "dataset_id": "id", "workspace": "w", "api_url": "u", "template": "ranking-v2",
        "prompt_field": "prompt", "slot_fields": list(SLOTS), "ranking_question": "ranking", "min_submitted": 2,
        "records": 1, "honeypots": 0})


# ------------------------------------------------------------------------------------------- slots
def test_record_key_depends_on_content_only():
    assert record_key("p", ["x", "y"]) == record_key("p", ["y", "x"])
    assert record_key("p", ["x", "y"]) != record_key("p", ["x", "z"]) != record_key("q", ["x", "z"])


def test_slot_shuffle_is_reproducible_and_varies_per_record():
    ids = ["a", "b", "c", "d"]
    assert shuffle_slots(ids, 0, "k1") == shuffle_slots(reversed(ids), 0, "k1")
    orders = Counter(shuffle_slots(ids, 0, f"k{i}") for i in range(400))
    assert len(orders) == 24  # every permutation occurs
    first = Counter(order[0] for order in orders.elements())
    assert all(70 < n < 130 for n in first.values())  # slot A is uniform over candidates


def test_ranks_map_slots_back_to_candidates_with_ties():
    rec = slot_record(slots=("c", "a", "d", "b"))  # response_1 holds c, response_2 a, ...
    ranks = rec.ranks([["response_3"], ["response_1", "response_4"], ["response_2"]], SLOTS)
    assert ranks == {"d": 1, "c": 2, "b": 2, "a": 3}
    with pytest.raises(ValueError, match="leaves out 1 slots"):
        rec.ranks([["response_1"], ["response_2", "response_3"]], SLOTS)
    with pytest.raises(ValueError, match="twice or unknown"):
        rec.ranks([["response_1"], ["response_1"], ["response_2", "response_3", "response_4"]], SLOTS)


def test_slot_map_round_trip_and_server_order(tmp_path):
    rec = slot_record(honeypot=True, answer={"a": 1, "b": 2, "c": 3, "d": 3})
    write_slot_map(tmp_path / "slots.jsonl", [rec, slot_record("r2")])
    back = read_slot_map(tmp_path)
    assert back["r1"] == rec and back["r1"].answer == {"a": 1, "b": 2, "c": 3, "d": 3}
    server = {"prompt": rec.prompt, "response_1": "text d", "response_2": "text b", "response_3": "text a",
              "response_4": "text c"}
    assert adopt_server_order(rec, server, SLOTS).slots == ("d", "b", "a", "c")
    with pytest.raises(UserError, match="holds other texts"):
        adopt_server_order(rec, {**server, "response_2": "something else"}, SLOTS)
    with pytest.raises(UserError, match="completed 'rlhf label push'"):
        read_slot_map(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------- push plan
def _rows(n_prompts=3, per_prompt=4):
    rows = []
    for i in range(n_prompts):
        texts = [f"reply {i}.{j}" for j in range(per_prompt)]
        rows.append({"prompt_id": f"p{i}", "prompt": f"Prompt {i}",
                     "candidates": [{"id": candidate_id(f"p{i}", t), "text": t, "policy": "sft", "logprob": -1.5}
                                    for t in texts]})
    return rows


def test_plan_scrubs_selects_k_and_skips_short_prompts():
    rows = _rows(3)
    rows[0]["candidates"][0]["text"] = "Write to jane.doe@example.com"
    rows[1]["candidates"] = rows[1]["candidates"][:3]  # fewer than K
    rows[2]["candidates"] += [{"id": "x", "text": f"extra {j}", "policy": "other"} for j in range(3)]
    records, skipped, pii = plan_records(rows, 4, seed=0, scrub=load_scrubber("default"))
    assert [r.prompt_id for r in records] == ["p0", "p2"]
    assert skipped == {"prompts_with_fewer_than_k": 1} and pii == {"EMAIL": 1}
    scrubbed = records[0]
    assert "Write to [EMAIL]" in scrubbed.texts.values()
    changed = next(c for c, t in scrubbed.texts.items() if t == "Write to [EMAIL]")
    assert changed == candidate_id("p0", "Write to [EMAIL]") and scrubbed.candidates[changed]["generate_id"]
    assert len(records[1].slots) == 4 and set(records[1].slots) <= {candidate_id("p2", t) for t in
                                                                      [c["text"] for c in rows[2]["candidates"]]}
    again, _, _ = plan_records(rows, 4, seed=0, scrub=load_scrubber("default"))
    assert again == records  # deterministic
    assert plan_records(rows, 4, seed=0, scrub=NO_SCRUB, max_prompts=1)[0][0].prompt_id == "p0"


def test_plan_collapses_candidates_equal_after_scrubbing():
    rows = _rows(1)
    rows[0]["candidates"][0]["text"] = "mail a@example.com"
    rows[0]["candidates"][1]["text"] = "mail b@example.org"
    records, skipped, _ = plan_records(rows, 4, seed=0, scrub=load_scrubber("default"))
    assert records == [] and skipped == {"empty_or_duplicate_candidates": 1, "prompts_with_fewer_than_k": 1}


def test_template_layout_of_the_shipped_ranking_template():
    template = load_template("ranking-v2")
    assert template_layout(template) == ("prompt", SLOTS, "ranking")
    questions = {q.name: q for q in template.questions}
    assert {o.value for o in questions["flags"].options} == {"contains_pii", "unsafe", "prompt_injection", "all_bad"}
    assert not questions["best_rating"].required and questions["rationale"].type == "text"
    broken = template.model_copy(update={"questions": [q for q in template.questions if q.type != "ranking"]})
    with pytest.raises(UserError, match="exactly one ranking question"):
        template_layout(broken)


# ------------------------------------------------------------------------------------------- honeypots
def test_demo_honeypots_have_clear_gaps_and_hidden_answers():
    pots = demo_honeypots(4, 4, seed=3, min_gap=0.15)
    assert len(pots) == 4
    for pot in pots:
        gold = {text: gold_rubric(pot.prompt, text) for text in pot.texts}
        by_rank = sorted(pot.texts, key=lambda t: pot.ranks[pot.texts.index(t)])
        scores = [gold[t] for t in by_rank]
        assert all(a - b >= 0.15 - 1e-9 for a, b in itertools.pairwise(scores))
    records = honeypot_records(pots, seed=0, scrub=NO_SCRUB)
    assert all(r.honeypot and sorted(r.answer.values()) == [1, 2, 3, 4] for r in records)
    assert any(r.slots != tuple(sorted(r.slots)) for r in records)


def test_honeypot_file_loading_and_errors(tmp_path):
    path = tmp_path / "pots.jsonl"
    path.write_text(json.dumps({"prompt": "Q", "responses": [{"text": t, "rank": r} for t, r in
                                                              [("a", 1), ("b", 2), ("c", 2), ("d", 3)]]}) + "\n")
    (pot,) = load_honeypots(path, 4)
    assert pot.ranks == (1, 2, 2, 3)
    with pytest.raises(UserError, match="template has 3 slots"):
        load_honeypots(path, 3)
    path.write_text('{"prompt": "Q"}\n')
    with pytest.raises(UserError, match="line 1: expected"):
        load_honeypots(path, 4)
    with pytest.raises(ValueError, match="ranks every response equal"):
        Honeypot("Q", ("a", "b"), (1, 1), "test")


# ------------------------------------------------------------------------------------------- bots
def _profile(role, **kw):
    return BotProfile(f"bot-{role}-1", role, kw.get("noise", 0.0), kw.get("tie_rate", 0.0), kw.get("bias", 0.8))


def test_bot_population_by_shares():
    bots = bot_profiles(3, 0.34, 0.34, "bot", 0.05, 0.02, 0.8)
    assert [(b.username, b.role) for b in bots] == [("bot-careless-1", "careless"), ("bot-biased-1", "biased"),
                                                    ("bot-honest-1", "honest")]
    with pytest.raises(ConfigError, match="lower one of them"):
        load_config(None, ["bots=3", "careless_share=0.7", "biased_share=0.7"], expect_stage="label_simulate")


def test_bot_rankings_follow_their_role():
    scores = {"worst": 0.1, "low": 0.4, "high": 0.7, "best": 0.95}

    def rubric(_prompt: str, text: str) -> float:
        return scores[text]

    slots = [("response_1", "low"), ("response_2", "best"), ("response_3", "worst"), ("response_4", "high")]
    honest, _ = bot_ranking(_profile("honest"), "p", slots, rubric, random.Random(0))
    assert honest == [["response_2"], ["response_4"], ["response_1"], ["response_3"]]
    first = Counter()
    for i in range(400):
        groups, _ = bot_ranking(_profile("biased"), "p", slots, rubric, random.Random(i))
        first[groups[0][0]] += 1
    assert 0.72 < first["response_1"] / 400 < 0.88  # slot A on top about position_bias of the time
    careless = Counter(tuple(g[0] for g in bot_ranking(_profile("careless"), "p", slots, rubric,
                                                        random.Random(i))[0]) for i in range(400))
    assert len(careless) > 20  # random orders
    tied = [bot_ranking(_profile("honest", tie_rate=0.5), "p", slots, rubric, random.Random(i))[0] for i in range(200)]
    assert 0.3 < sum(len(g) < 4 for g in tied) / 200 < 1.0


# ------------------------------------------------------------------------------------------- pseudonyms
def test_pseudonyms_are_keyed_stable_and_the_key_file_is_private(tmp_path):
    service = ServiceConfig(home=str(tmp_path / "home"))
    key = load_pseudonym_key(service, environ={})
    assert stat.S_IMODE((tmp_path / "home" / "pseudonym.key").stat().st_mode) == 0o600
    assert load_pseudonym_key(service, environ={}) == key
    assert pseudonym("alice", key) == pseudonym("alice", key) != pseudonym("bob", key)
    assert pseudonym("alice", key) != pseudonym("alice", b"another key") and "alice" not in pseudonym("alice", key)
    assert load_pseudonym_key(service, environ={"RLHF_PSEUDONYM_KEY": "from-env"}) == b"from-env"
    os.chmod(tmp_path / "home" / "pseudonym.key", 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        load_pseudonym_key(service, environ={})


# ------------------------------------------------------------------------------------------- pull pieces
def _response(rid, ranking, status="submitted", rationale=None, updated="t1"):
    values = {"ranking": {"value": ranking}}
    if rationale:
        values["rationale"] = {"value": rationale}
    return {"id": rid, "status": status, "values": values, "user_id": "u", "updated_at": updated}


def test_response_rows_map_slots_and_scrub_rationales():
    rec = slot_record(slots=("c", "a", "d", "b"))
    ranking = [{"value": "response_3", "rank": 1}, {"value": "response_1", "rank": 2},
               {"value": "response_4", "rank": 2}, {"value": "response_2", "rank": 3}]
    row = response_row(_response("x", ranking, rationale="mail me at bob@example.com"), rec, push_info(), "ann-1",
                       load_scrubber("default"))
    assert row["ranks"] == {"d": 1, "c": 2, "b": 2, "a": 3} and row["rationale"] == "mail me at [EMAIL]"
    partial = response_row(_response("y", ranking[:2]), rec, push_info(), "ann-1", NO_SCRUB)
    assert partial["ranks"] is None and "leaves out" in partial["invalid"]
    (vote,) = votes_from_rows([row, partial])
    assert vote.slots == ("c", "a", "d", "b") and vote.annotator == "ann-1"


def test_responses_digest_ignores_drafts_and_sees_updates():
    records = [{"responses": [_response("1", []), _response("2", [], status="draft")]}]
    base = responses_digest(records)
    records[0]["responses"][1]["updated_at"] = "t2"
    assert responses_digest(records) == base
    records[0]["responses"][0]["updated_at"] = "t2"
    assert responses_digest(records) != base


def test_build_pairs_leaves_out_honeypots_ties_and_excluded_annotators():
    answer = {"a": 1, "b": 2, "c": 3, "d": 4}
    slot_map = {"r1": slot_record("r1"), "hp": slot_record("hp", honeypot=True, answer=answer)}
    order = {"a": 1, "b": 2, "c": 3, "d": 3}
    votes = [RankingVote("r1", "p-r1", "ann-1", order), RankingVote("r1", "p-r1", "ann-2", order),
             RankingVote("r1", "p-r1", "ann-bad", {"a": 4, "b": 3, "c": 2, "d": 1}),
             RankingVote("hp", "p-hp", "ann-1", {"a": 1, "b": 2, "c": 3, "d": 4}, honeypot=True)]
    pairs = build_pairs(votes, slot_map, "majority", 0.5, 1, {"ann-bad"}, {"snapshot": "s"})
    assert {(p.chosen_id, p.rejected_id) for p in pairs} == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")}
    assert all(p.agreement == 1.0 and p.provenance["annotators"] == ["ann-1", "ann-2"] for p in pairs)
    ab = next(p for p in pairs if p.chosen_id == "a" and p.rejected_id == "b")
    assert (ab.chosen, ab.rejected, ab.provenance["chosen_policy"]) == ("text a", "text b", "pol-a")
    with_bad = build_pairs(votes, slot_map, "majority", 0.5, 1, set(), {})
    assert all(p.agreement == pytest.approx(2 / 3) for p in with_bad)
    assert build_pairs(votes, slot_map, "majority", 0.5, 3, set(), {}) == with_bad
    assert build_pairs(votes, slot_map, "majority", 0.5, 4, set(), {}) == []


def test_status_table():
    status = RoundStatus("round-1", 2, 60, 20, 40, [AnnotatorProgress("alice", "ann-0123", 12, 1, 0)])
    text = status.describe()
    assert "20 of 60 records completed (33%)" in text and "alice" in text and "ann-0123" in text
    assert status.to_dict()["annotators"][0]["submitted"] == 12


def test_shipped_loop_configs_and_limits():
    for name, stage in (("push-demo", "label_push"), ("simulate-demo", "label_simulate"), ("pull-demo", "label_pull")):
        assert load_config(CONFIGS / f"{name}.yaml").stage == stage
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, ["batch_size=501"], expect_stage="label_push")
    with pytest.raises(ConfigError, match="exclude_flagged"):
        load_config(None, ["exclude_flagged=[lazy]"], expect_stage="label_pull")
