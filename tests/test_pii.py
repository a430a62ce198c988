"""PII scrubbing: a planted corpus must be fully scrubbed and benign support text must survive untouched."""

from __future__ import annotations

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

# (kind, planted value, sentence with {} where the value goes)
PLANTED: list[tuple[str, str, str]] = [
    ("EMAIL", "jane.doe@example.com", "Please reply to {} as soon as you can."),
    ("EMAIL", "JOHN.SMITH+orders@Example.CO.UK", "My login is {}, I forgot the password."),
    ("EMAIL", "support-team@mail.shop-example.io", "I already wrote to {} twice."),
    ("EMAIL", "a_b.c@sub.domain.org", "Send the invoice to <{}>."),
    ("EMAIL", "x99@test.de", "({}) is my backup address"),
    ("PHONE", "+44 20 7946 0958", "Call me on {} after six."),
    ("PHONE", "(555) 123-4567", "My number is {} if you need it."),
    ("PHONE", "555.123.4567", "Reach me at {}."),
    ("PHONE", "+1-555-123-4567", "The courier can ring {} on arrival."),
    ("PHONE", "06 12 34 56 78", "Mon portable: {} merci."),
    ("PHONE", "+33 6 12 34 56 78", "French mobile {} works too."),
    ("PHONE", "+49 30 1234567", "Office line {}, ask for Klaus."),
    ("PHONE", "020 7946 0958", "Landline {} is best."),
    ("PHONE", "+91 98765 43210", "WhatsApp me at {}."),
    ("PHONE", "1-800-555-0199", "I called {} and nobody answered."),
    ("PHONE", "+44 (0)20 7946 0958", "Our desk: {}."),
    ("PHONE", "5551234567", "please call me 5551234567 tomorrow"),
    ("CARD", "4111 1111 1111 1111", "I paid with {} and it was charged twice."),
    ("CARD", "5555-5555-5555-4444", "Card {} expires 04/27."),
    ("CARD", "3782 822463 10005", "My Amex {} was declined."),
    ("CARD", "6011111111111117", "Discover card {}, please refund."),
    ("CARD", "4012 8888 8888 1881", "Use {} for the replacement order."),
    ("CARD", "2223003122003222", "New Mastercard number {}."),
    ("IBAN", "DE89 3704 0044 0532 0130 00", "Refund to IBAN {} please."),
    ("IBAN", "GB82WEST12345698765432", "My account {} is at Westminster."),
    ("IBAN", "FR14 2004 1010 0505 0001 3M02 606", "Virement sur {} svp."),
    ("IBAN", "NL91ABNA0417164300", "Pay {} by Friday."),
    ("IBAN", "ES91 2100 0418 4502 0005 1332", "El IBAN es {}."),
    ("IBAN", "CH93 0076 2011 6238 5295 7", "Swiss account {}."),
    ("ADDRESS", "742 Evergreen Terrace, Springfield, IL 62704", "Ship it to {} instead."),
    ("ADDRESS", "55 W. 42nd St, Apt 4B, New York, NY 10036", "I live at {} now."),
    ("ADDRESS", "221B Baker Street, London NW1 6XE", "Deliver to {} please."),
    ("ADDRESS", "Flat 3, 12 Oak Road, Manchester M1 2AB", "The parcel went to {} by mistake."),
    ("ADDRESS", "1600 Pennsylvania Avenue NW, Washington, DC 20500", "Bill to {}."),
    ("ADDRESS", "4059 Mt Lee Dr., Hollywood, CA 90068", "Old address {} is wrong."),
    ("ADDRESS", "Hauptstraße 5, 10115 Berlin", "Lieferung an {} bitte."),
    ("ADDRESS", "PO Box 1234", "Mail it to {}."),
    ("SSN", "123-45-6789", "My SSN is {} for the tax form."),
    ("SSN", "078-05-1120", "SSN {} on file."),
    ("SSN", "219-09-9999", "Use {} please."),
    ("SSN", "457-55-5462", "It says {} on my card."),
    ("SSN", "536-22-1234", "Number {}, verified."),
    ("IP", "192.168.1.10", "My router is at {}."),
    ("IP", "10.0.0.1", "Gateway {} is down."),
    ("IP", "203.0.113.77", "Login from {} was not me."),
    ("IP", "8.8.8.8", "DNS set to {}."),
    ("IP", "172.16.254.1", "Server {} refuses connections."),
]

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
]


def _planted_corpus() -> list[tuple[str, str, str]]:
    return [
        (kind, value, template.format(value) if "{}" in template else template) for kind, value, template in PLANTED
    ]


@pytest.mark.parametrize(("kind", "value", "sentence"), _planted_corpus(), ids=[p[1] for p in PLANTED])
def test_planted_pii_is_replaced(kind: str, value: str, sentence: str) -> None:
    result = default_scrubber(sentence)
    assert value not in result.text, result.text
    assert f"[{kind}]" in result.text, result.text
    assert result.counts.get(kind, 0) >= 1


def test_no_digit_run_of_planted_values_survives_in_bulk() -> None:
    kinds = {kind for kind, _, _ in PLANTED}
    for kind in kinds:
        assert sum(k == kind for k, _, _ in PLANTED) >= 5, kind
    corpus = " ".join(sentence for _, _, sentence in _planted_corpus())
    result = default_scrubber(corpus)
    for kind, value, _ in PLANTED:
        assert value not in result.text, (kind, value)
    assert sum(result.counts.values()) == len(PLANTED), result.counts


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
