"""Demo world: prompt generator and parser, reply writer, gold rubric, SFT corpus."""

from __future__ import annotations

import itertools
import random
import re
import statistics

import pytest

from rlhf.world import (
    INTENTS,
    UNKNOWN_INTENT,
    WEIGHTS,
    DemoPrompt,
    ResponseQuality,
    detect_claims,
    generate_prompts,
    generate_response,
    gold_rubric,
    intent_of,
    parse_prompt,
    rubric_breakdown,
    sft_corpus,
    to_chat,
)
from rlhf.world.phrases import (
    COURTESY,
    CURT_CLOSERS,
    CURT_OPENERS,
    CURT_OPENERS_NO_ORDER,
    FILLER_MARKERS,
    FILLERS,
    GREETING,
    POLITE_CLOSERS,
    POLITE_OPENERS,
    POLITE_OPENERS_WITH_ORDER,
)
from rlhf.world.policy import CLAIMS, FOLLOW_UPS, topics_in
from rlhf.world.prompts import CITIES, METHODS, NAMES, PRODUCTS, TEMPLATES, prompt_id

PROMPT = "Hi, I'm Priya. Can I return the blender from order #K48213?"
GOOD = (
    "Hi Priya, thanks for getting in touch. You can return the blender within 30 days of purchase. Have a lovely day!"
)
WRONG_FACT = (
    "Hi Priya, thanks for getting in touch. You can return the blender within 14 days of purchase. Have a lovely day!"
)
OFF_INTENT = "Hi Priya, thanks for getting in touch. Standard delivery takes 3-5 business days. Have a lovely day!"
CURT = "You can return the blender within 30 days of purchase. That's all."
RAMBLING = (
    "Hi Priya, thanks for getting in touch. As you may know, we are a small team that cares a great deal about every "
    "single customer. You can return the blender within 30 days of purchase. Rest assured that we look into every "
    "single question in great detail. Have a lovely day!"
)
ALL_BAD = (
    "Standard delivery takes 10-14 business days. We always strive to go above and beyond in everything that we do "
    "here. At the end of the day, your satisfaction is what matters most to all of us. Read the policy next time."
)
FIELDS = {
    "the_product": "the blender",
    "The_product": "The blender",
    "to_city": "to Leeds",
    "your_order": "order #K48213",
    "method": "card",
}
ALL_QUALITIES = [ResponseQuality(*flags) for flags in itertools.product((True, False), repeat=4)]


# ---------------------------------------------------------------- prompts


def test_prompts_are_deterministic_from_the_seed() -> None:
    assert generate_prompts(50, seed=7) == generate_prompts(50, seed=7)
    assert [p.text for p in generate_prompts(50, seed=7)] != [p.text for p in generate_prompts(50, seed=8)]


def test_prompt_ids_are_content_hashes() -> None:
    prompts = generate_prompts(100, seed=3)
    for p in prompts:
        assert re.fullmatch(r"[0-9a-f]{12}", p.id)
        assert p.id == prompt_id(p.text, p.intent)
        assert DemoPrompt(text=p.text, intent=p.intent, slots=dict(p.slots)).id == p.id
    assert len({p.id for p in prompts}) == len({(p.intent, p.text) for p in prompts})
    assert hash(prompts[0]) == hash(DemoPrompt(text=prompts[0].text, intent=prompts[0].intent, slots={}))


def test_every_intent_present_and_balanced() -> None:
    counts = {i: 0 for i in INTENTS}
    for p in generate_prompts(62, seed=0):
        counts[p.intent] += 1
    assert set(counts) == set(INTENTS)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_slot_variety_and_prompt_length() -> None:
    prompts = generate_prompts(200, seed=11)

    def slots(key: str) -> set[str]:
        return {p.slots[key] for p in prompts if key in p.slots}

    assert len(slots("name")) >= 30
    assert len(slots("order")) >= 30
    assert len(slots("product")) >= 15
    assert len(slots("city")) >= 10
    assert len({p.text for p in prompts}) >= 195
    assert all(len(p.text.split()) < 40 for p in prompts)
    assert all(re.fullmatch(r"#[A-Z]\d{5}", p.slots["order"]) for p in prompts if "order" in p.slots)


def test_parser_recovers_intent_and_slots_of_generated_prompts() -> None:
    for p in generate_prompts(600, seed=5):
        parsed = parse_prompt(p.text)
        assert (parsed.intent, parsed.name) == (p.intent, p.slots["name"]), p.text
        assert parsed.order == (p.slots["order"].lstrip("#") if "order" in p.slots else None), p.text
        assert parsed.product == (p.slots["product"].lower() if "product" in p.slots else None), p.text
        assert intent_of(p.text) == p.intent


def test_every_template_parses_with_every_product_and_name() -> None:
    for intent, templates in TEMPLATES.items():
        for template in templates:
            for k, product in enumerate(PRODUCTS):
                text = template.format(
                    name=NAMES[k % len(NAMES)],
                    order="#B12345",
                    product=product,
                    a_product=f"a {product}",
                    date="3 May",
                    city=CITIES[k % len(CITIES)],
                    method=METHODS[k % len(METHODS)],
                    amount="£19.99",
                )
                parsed = parse_prompt(text)
                assert (parsed.intent, parsed.name) == (intent, NAMES[k % len(NAMES)]), text


def test_parser_reads_chat_wrapped_and_unknown_prompts() -> None:
    wrapped = "<|user|>\nPriya here. When will the refund for order #K48213 reach my card?\n<|assistant|>\n"
    parsed = parse_prompt(wrapped)
    assert (parsed.intent, parsed.name, parsed.order) == ("payments", "Priya", "K48213")
    assert intent_of("What a lovely day.") == UNKNOWN_INTENT
    assert parse_prompt("").name is None


def test_demo_prompt_and_to_chat_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown intent"):
        DemoPrompt(text="hello", intent="refunds", slots={})
    with pytest.raises(ValueError, match="empty"):
        DemoPrompt(text="  ", intent="returns", slots={})
    with pytest.raises(ValueError, match="non-negative"):
        generate_prompts(-1, seed=0)
    assert to_chat(PROMPT) == [{"role": "user", "content": PROMPT}]
    with pytest.raises(ValueError, match="non-empty"):
        to_chat("")


# ---------------------------------------------------------------- policy and phrases


def test_each_claim_phrasing_states_exactly_its_own_claim() -> None:
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))
    for intent in INTENTS:
        assert sum(c.true for c in CLAIMS if c.intent == intent) == 1
        assert sum(not c.true for c in CLAIMS if c.intent == intent) >= 2
    for claim in CLAIMS:
        for phrasing in claim.phrasings:
            sentence = phrasing.format(**FIELDS)
            assert [c.key for c in detect_claims(sentence)] == [claim.key], sentence
            assert topics_in(sentence) == {claim.intent}, sentence


def test_style_phrases_state_no_claim_and_no_topic() -> None:
    for intent, follow_ups in FOLLOW_UPS.items():
        for sentence in follow_ups:
            assert detect_claims(sentence) == [] and topics_in(sentence) <= {intent}, sentence
    frames = POLITE_OPENERS + POLITE_OPENERS_WITH_ORDER + POLITE_CLOSERS + CURT_OPENERS + CURT_OPENERS_NO_ORDER
    for sentence in frames + CURT_CLOSERS + FILLERS:
        text = sentence.format(name="Priya", order="#K48213")
        assert detect_claims(text) == [] and topics_in(text) == set(), text
    for sentence in FILLERS:
        assert len(FILLER_MARKERS.findall(sentence)) == 1, sentence
    for sentence in CURT_OPENERS + CURT_OPENERS_NO_ORDER + CURT_CLOSERS:
        assert not COURTESY.search(sentence) and not GREETING.match(sentence), sentence


# ---------------------------------------------------------------- rubric


def test_weights_sum_to_one() -> None:
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_rubric_orders_hand_built_qualities() -> None:
    best, worst = gold_rubric(PROMPT, GOOD), gold_rubric(PROMPT, ALL_BAD)
    assert best == pytest.approx(1.0) and worst == pytest.approx(0.0)
    for flawed in (WRONG_FACT, OFF_INTENT, CURT, RAMBLING):
        assert worst < gold_rubric(PROMPT, flawed) < best, flawed
    assert rubric_breakdown(PROMPT, WRONG_FACT)["correct"] == 0.0
    assert rubric_breakdown(PROMPT, OFF_INTENT)["on_intent"] == 0.0
    assert rubric_breakdown(PROMPT, CURT)["polite"] == 0.0
    assert rubric_breakdown(PROMPT, RAMBLING)["concise"] == 0.0


def test_rubric_axes_match_the_quality_each_reply_was_written_with() -> None:
    rng = random.Random(0)
    for prompt in generate_prompts(36, seed=2):
        scores = {}
        for quality in ALL_QUALITIES:
            reply = generate_response(prompt, quality, rng)
            assert 5 <= len(reply.split()) <= 70, reply
            parts = rubric_breakdown(prompt.text, reply)
            expected = {k: float(getattr(quality, k)) for k in WEIGHTS}
            assert {k: parts[k] for k in WEIGHTS} == expected, (prompt.text, reply, parts)
            assert parts["fluency"] == 1.0
            scores[quality.flaws] = parts["total"]
        assert scores[()] == 1.0 and scores[("correct", "on_intent", "polite", "concise")] == 0.0
        for axis in WEIGHTS:
            assert 0.0 < scores[(axis,)] < 1.0


def test_rubric_is_robust_to_garbage() -> None:
    garbage = [
        "",
        "   \n\t",
        "buy " * 500,
        "日本語のテキスト 🙂 ünïcödé ☃☃☃ ßßß",
        "\x00\x01\x02 \ufffd",
        "Hi Priya, you can ret",
        "!!!!!!!!!!!!!!!!!!!!!!!!",
        "Returns are accepted within 30 days of purchase. " * 40,
        "30 30 30 days days days return return return",
        "the " * 3,
    ]
    for response in garbage:
        for prompt in (PROMPT, "", "€€€ ☃"):
            score = gold_rubric(prompt, response)
            assert isinstance(score, float) and 0.0 <= score <= 0.1, (prompt, response[:60], score)
    with pytest.raises(TypeError, match="prompt: str, response: str"):
        gold_rubric(PROMPT, None)  # type: ignore[arg-type]


def test_right_and_wrong_fact_together_is_not_correct() -> None:
    both = GOOD.replace("Have a", "Returns are accepted within 7 days of purchase. Have a")
    assert rubric_breakdown(PROMPT, both)["correct"] == 0.0
    assert gold_rubric(PROMPT, both) <= 0.6
    negated = "Hi Priya, thanks. Returns are not accepted within 30 days of purchase."
    assert rubric_breakdown(PROMPT, negated)["correct"] == 0.0
    bare_number = "Hi Priya, thanks for getting in touch. 30 days. Have a lovely day!"
    assert rubric_breakdown(PROMPT, bare_number)["correct"] == 0.0


def test_stuffing_polite_phrases_does_not_raise_the_score() -> None:
    base = "Hi Priya. You can return the blender within 30 days of purchase. Thank you!"
    scores = [gold_rubric(PROMPT, base)]
    for k in range(1, 6):
        stuffed = "Hi Priya, thank you so much! " + base.split(". ", 1)[1] + " " + " ".join(POLITE_CLOSERS * k)
        scores.append(gold_rubric(PROMPT, stuffed))
    assert all(later <= earlier for earlier, later in itertools.pairwise(scores)), scores
    assert scores[-1] < scores[0] - 0.1
    assert rubric_breakdown(PROMPT, "Hi Priya! " * 30)["polite"] <= 1.0


def test_mentioning_every_intent_is_off_intent() -> None:
    every_fact = " ".join(next(c for c in CLAIMS if c.intent == i and c.true).phrasings[1] for i in INTENTS)
    reply = f"Hi Priya, thanks for getting in touch. {every_fact} Have a lovely day!"
    parts = rubric_breakdown(PROMPT, reply)
    assert parts["on_intent"] == 0.0 and parts["total"] < gold_rubric(PROMPT, GOOD) - 0.3
    salad = (
        "Hi Priya, thanks. You can return the blender within 30 days of purchase. Delivery, refund, cancel, warranty."
    )
    assert rubric_breakdown(PROMPT, salad)["on_intent"] == 0.0
    topic_only = "Hi Priya, thanks for asking about returns. Have a lovely day!"
    assert rubric_breakdown(PROMPT, topic_only)["on_intent"] == 0.5
    assert gold_rubric(PROMPT, topic_only) < gold_rubric(PROMPT, CURT)


def test_wrong_name_and_someone_elses_order_are_penalised() -> None:
    wrong_name = GOOD.replace("Hi Priya", "Hi Omar")
    assert rubric_breakdown(PROMPT, wrong_name)["polite"] < rubric_breakdown(PROMPT, GOOD)["polite"]
    other_order = GOOD.replace("the blender", "the blender from order #Z99999")
    assert rubric_breakdown(PROMPT, other_order)["correct"] == 0.5
    same_order = GOOD.replace("the blender", "the blender from order #K48213")
    assert rubric_breakdown(PROMPT, same_order)["correct"] == 1.0
    other_product = GOOD.replace("the blender", "the air fryer")
    assert rubric_breakdown(PROMPT, other_product)["correct"] == 0.5


def test_repeating_the_answer_is_penalised() -> None:
    fact = "You can return the blender within 30 days of purchase."
    once = gold_rubric(PROMPT, f"Hi Priya, thanks. {fact}")
    twice = gold_rubric(PROMPT, f"Hi Priya, thanks. {fact} {fact}")
    many = gold_rubric(PROMPT, f"Hi Priya, thanks. {' '.join([fact] * 10)}")
    assert once > twice > many and many < 0.2


# ---------------------------------------------------------------- SFT corpus


def test_sft_corpus_is_deterministic_and_scored_by_the_rubric() -> None:
    corpus = sft_corpus(120, seed=4)
    assert corpus == sft_corpus(120, seed=4)
    assert corpus != sft_corpus(120, seed=5)
    for row in corpus:
        assert set(row) == {"prompt", "completion", "intent", "gold"}
        assert row["gold"] == gold_rubric(row["prompt"], row["completion"])
        assert row["intent"] == intent_of(row["prompt"])


def test_sft_corpus_has_a_spread_of_gold_levels() -> None:
    golds = [row["gold"] for row in sft_corpus(400, seed=0)]
    assert len(set(golds)) >= 5
    assert min(golds) == 0.0 and max(golds) == 1.0
    assert 0.35 < statistics.mean(golds) < 0.65 and statistics.pstdev(golds) > 0.2
    assert all(row["gold"] == 1.0 for row in sft_corpus(60, seed=1, good_fraction=1.0))
    assert all(row["gold"] == 0.0 for row in sft_corpus(60, seed=1, good_fraction=0.0))


def test_sft_corpus_rejects_bad_arguments() -> None:
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="good_fraction"):
            sft_corpus(10, seed=0, good_fraction=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        sft_corpus(-5, seed=0)
