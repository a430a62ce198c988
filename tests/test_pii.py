"""PII scrubbing: no identifying fragment of a planted value survives (tests/pii_corpus.py), the ordinary text
around it does, and benign support text survives untouched."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from rlhf.data.pii import (
    PIIConfigError,
    ScrubResult,
    default_scrubber,
    iban_is_valid,
    load_scrubber,
    luhn_is_valid,
    scrub_many,
)
from rlhf.stages import load_config
from rlhf.stages.prepare import run_prepare
from tests.pii_corpus import CORPUS, KINDS, REPLIES, Planted, leaks, lost

# (kind, planted value, sentence with {} where the value goes): the corpus in the shape other tests read
PLANTED: list[tuple[str, str, str]] = [(p.kind, p.value, p.sentence) for p in CORPUS]

BENIGN = [
    "Where is my order #A12345? It was placed on 2026-03-14.",
    "I ordered on 14/03/2026 and it still hasn't shipped (order 123456).",
    "The jacket cost $49.99 but I was charged $59.99.",
    "I need 3 more units, quantity 12 in total, by 03-20-2026.",
    "Order no. 1234567890 arrived damaged; the box was crushed.",
    "Tracking number 9400 1000 0000 0000 0000 00 shows no movement.",
    "The barcode reads 4006381333931 on the package.",
    "My app is on version 1.2.3.4 and it crashes at 10:30.",
    "Can I return 2 items from invoice INV-2026-000123 for a refund of €1,249.50?",
    "I bought the 2 Street Fighter games listed on your main page.",
    "Reset my password please, the link expired after 24 hours.",
    "The delivery window was 9.30-17.00 but nobody came.",
    "Item SKU 88-1234-567 is out of stock; when will it be back?",
    "Please cancel subscription #SUB-0099 effective 2026/04/01.",
    "I want 5 pairs in size 10.5, colour navy.",
    "Why did you charge me 3 times for order A-778899?",
    "Your hotline told me to wait 48 hours.",
    "My case ID is 20260314-001, ticket priority 2.",
    "The 4K TV model 55UQ7000 is listed at 499.00 USD.",
    "We're at 10 Downing in the game lobby, not a real place.",
    "I'll look at example dot com tonight and compare the 3 plans.",
    "We met at the cafe at 5 and paid 12.50 each, my colleague stayed at home.",
    "The 2019-2023 report covers 555 stores and 1200 staff.",
    "The ISBN is 978-3-16-148410-0 and the second edition came out in 2014.",
    "Le prix est de 12 euros par personne, 3 places restantes.",
    "I took 2 cours de Français this spring and came 3rd place overall.",
    "Via Email 3 times now, still no answer about ticket 4471.",
    "Thanks, the RTX 4090 and the Ryzen 7950X arrived on 2026-03-14.",
    "Ich habe 3 Pakete am 14.03.2026 bekommen, Preis 49,90 €.",
    "Room 101-1234 of building 7 and extension 42 are in the staff list.",
    "Order no. 4471234567 and invoice #5559876543 were both refunded.",
    "The GPS reading was 122.4194 west and the pump ran 245.5 hours.",
]


def test_corpus_fragments_are_in_the_sentences_and_every_kind_is_covered() -> None:
    """The check can fail: every fragment and every kept word is found in the unscrubbed sentence."""
    for kind in KINDS:
        assert sum(p.kind == kind for p in CORPUS) >= 5, kind
    for item in CORPUS:
        assert item.fragments(), item.value
        assert leaks(item, item.text) == list(item.fragments()), item.value
        assert item.keep and lost(item, item.text) == [], item.value
        assert not any(leaks(item, word) for word in item.keep), (item.value, item.keep)  # keep is not PII


def test_leak_check_catches_a_partial_leak() -> None:
    address = next(p for p in CORPUS if p.value.startswith("742 Evergreen"))
    assert leaks(address, "Ship it to [ADDRESS], Springfield, IL 62704 instead, 2 boxes.") == ["62704"]
    phone = next(p for p in CORPUS if p.value == "+33 1 42 68 53 00")
    assert leaks(phone, "Le standard: +33 1 [PHONE] 53.00") == ["5300"]
    email = next(p for p in CORPUS if p.value == "JOHN.SMITH+orders@Example.CO.UK")
    assert leaks(email, "My login is [EMAIL]+orders, john") == ["JOHN", "orders"]


@pytest.mark.parametrize("item", CORPUS, ids=[p.value for p in CORPUS])
def test_no_identifying_fragment_survives_and_ordinary_text_does(item: Planted) -> None:
    result = default_scrubber(item.text)
    assert leaks(item, result.text) == [], result.text
    assert lost(item, result.text) == [], result.text
    assert f"[{item.kind}]" in result.text, result.text
    assert result.counts == {item.kind: 1}, result.counts


@pytest.mark.parametrize("item", CORPUS, ids=[p.value for p in CORPUS])
def test_values_in_neutral_replies_leave_no_fragment(item: Planted) -> None:
    """A model echoes the value with no hint around it ("Noted: 555.1234."): it is still found."""
    for reply in REPLIES:
        result = default_scrubber(reply.format(value=item.value, text=item.text))
        assert leaks(item, result.text) == [], result.text
        assert sum(result.counts.values()) == 1, (result.text, result.counts)


def _leaked_and_lost(texts: list[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(value -> fragments that survived, value -> ordinary words that were lost) of CORPUS[i] in texts[i]."""
    assert len(texts) == len(CORPUS)
    leaked = {p.value: leaks(p, t) for p, t in zip(CORPUS, texts) if leaks(p, t)}
    dropped = {p.value: lost(p, t) for p, t in zip(CORPUS, texts) if lost(p, t)}
    return leaked, dropped


def test_whole_corpus_in_one_text_leaks_nothing_and_counts_one_span_per_value() -> None:
    """All sentences in one text (neighbours must not hide or shift a match): each item checked in its part."""
    result = default_scrubber("\n\n".join(p.text for p in CORPUS))
    assert _leaked_and_lost(result.text.split("\n\n")) == ({}, {})
    assert sum(result.counts.values()) == len(CORPUS), result.counts


def test_prepare_outputs_hold_no_fragment(tmp_path) -> None:
    """The prepare stage on the corpus (dedup off, so every sentence is written): no fragment in its outputs."""
    src = tmp_path / "planted.jsonl"
    src.write_text("".join(json.dumps({"prompt": p.text, "note": p.text, "case": i}) + "\n"
                           for i, p in enumerate(CORPUS)), encoding="utf-8")
    cfg = load_config(None, [f"run.root={tmp_path / 'runs'}", "source.kind=file", f"source.path={src}",
                             "dedup.enabled=false"], expect_stage="prepare")
    out = run_prepare(cfg)
    rows = [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
            for line in (out / "prompts" / name).read_text(encoding="utf-8").splitlines()]
    by_case = {row["metadata"]["case"]: row for row in rows}
    assert sorted(by_case) == list(range(len(CORPUS)))
    for part in ("prompt", "note"):
        texts = [by_case[i]["prompt"] if part == "prompt" else by_case[i]["metadata"]["note"]
                 for i in range(len(CORPUS))]
        assert _leaked_and_lost(texts) == ({}, {}), part


@pytest.mark.parametrize("sentence", BENIGN)
def test_benign_support_text_survives(sentence: str) -> None:
    result = default_scrubber(sentence)
    assert result.text == sentence
    assert result.counts == {}


def test_card_and_iban_validation_guard_order_numbers() -> None:
    assert luhn_is_valid("4111111111111111") and not luhn_is_valid("4111111111111112")
    assert iban_is_valid("DE89 3704 0044 0532 0130 00") and not iban_is_valid("DE88 3704 0044 0532 0130 00")
    text = "Order 4111111111111112 and account DE88370400440532013000 are references."
    assert default_scrubber(text).text == text


def test_card_followed_by_extra_group_keeps_the_rest() -> None:
    assert default_scrubber("card 4111 1111 1111 1111 2026 please").text == "card [CARD] 2026 please"


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_scrubbers.py").write_text(
        textwrap.dedent(
            """
            from rlhf.data.pii import ScrubResult

            def mask_names(text):
                return text.replace("Alice", "[NAME]")

            def mask_names_counted(text):
                n = text.count("Alice")
                return ScrubResult(text=text.replace("Alice", "[NAME]"), counts={"NAME": n} if n else {})

            def broken(text):
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_scrubbers"
    sys.modules.pop("my_scrubbers", None)


def test_user_scrubber_by_module_function(user_module: str) -> None:
    scrub = load_scrubber(f"{user_module}:mask_names")
    result = scrub("Alice wrote from alice@example.com")
    assert result.text == "[NAME] wrote from alice@example.com"
    assert result.counts == {f"{user_module}:mask_names": 1}


def test_chained_specs_apply_in_order_and_sum_counts(user_module: str) -> None:
    scrub = load_scrubber(["default", f"{user_module}:mask_names_counted"])
    result = scrub("Alice and Alice: alice@example.com, +44 20 7946 0958")
    assert result.text == "[NAME] and [NAME]: [EMAIL], [PHONE]"
    assert result.counts == {"EMAIL": 1, "PHONE": 1, "NAME": 2}
    assert load_scrubber(f"default,{user_module}:mask_names_counted")("Alice").text == "[NAME]"


def test_user_scrubber_with_wrong_return_type_is_reported(user_module: str) -> None:
    with pytest.raises(PIIConfigError, match="returned int"):
        load_scrubber(f"{user_module}:broken")("text")


def test_none_only_when_explicit_and_alone() -> None:
    assert load_scrubber("none")("jane@example.com") == ScrubResult("jane@example.com", {})
    with pytest.raises(PIIConfigError, match="cannot be chained"):
        load_scrubber("default,none")
    with pytest.raises(PIIConfigError, match="empty scrubber spec"):
        load_scrubber("")
    with pytest.raises(PIIConfigError, match="unknown scrubber spec 'regex'"):
        load_scrubber("regex")
    with pytest.raises(PIIConfigError, match="cannot import module 'no_such_mod_xyz'"):
        load_scrubber("no_such_mod_xyz:f")
    with pytest.raises(PIIConfigError, match="no callable 'nope'"):
        load_scrubber("rlhf.data.pii:nope")


def test_scrub_many_sums_counts_and_accepts_plain_callables() -> None:
    texts, counts = scrub_many(["a@b.com and c@d.org", "call (555) 123-4567", "nothing here"], default_scrubber)
    assert texts == ["[EMAIL] and [EMAIL]", "call [PHONE]", "nothing here"]
    assert counts == {"EMAIL": 2, "PHONE": 1}
    texts, counts = scrub_many(["x", "y"], lambda t: t.upper() if t == "x" else t)
    assert texts == ["X", "y"] and counts == {"custom": 1}
