"""PII scrubbing: pluggable scrubbers and a default rule-based one.

A scrubber is any callable ``text -> ScrubResult`` (or ``text -> str``). The default scrubber applies
regular expressions in a fixed order and replaces each hit with a typed placeholder:

======  ==========  ===============================================================================
order   placeholder what is matched (and validated)
======  ==========  ===============================================================================
1       [EMAIL]     ``local@domain.tld`` (also ``local @ domain.tld`` and ``mailto:`` links), then
                    spelled-out forms: ``jane(at)example(dot)com``, ``jane [at] example.com``, and
                    ``jane at example dot com`` (bare "at" only with a spelled "dot" before a known
                    top-level domain, and not after words such as "look"/"me"/"arrived")
2       [IBAN]      two letters, two check digits, 11-30 letters/digits (with or without spaces, any
                    case); kept only when the account part has 8+ digits and the ISO 13616 mod-97
                    check gives 1
3       [CARD]      13-19 digits, contiguous or in groups split by spaces/dashes; kept only when the
                    number starts with a card-network digit (2-6) and passes the Luhn check, so that
                    order, tracking and barcode numbers survive
4       [SSN]       US social security numbers ``123-45-6789`` (invalid area/group/serial skipped)
5       [IP]        IPv4 dotted quads (skipped right after "version"/"v"/"build")
6       [PHONE]     ``+CC`` international numbers, US ``(555) 123-4567`` / ``555.123.4567`` shapes,
                    trunk-prefixed national numbers (``020 7946 0958``, ``06 12 34 56 78``, and
                    ``0612345678`` / ``07700900123`` without gaps), US local numbers ``555-1234`` /
                    ``555.1234``, US numbers without gaps ``5551234567`` (area code 2-9;
                    not after "order"/"invoice"/"tracking"/"ticket"/"#"...), and bare digit runs right
                    after a word such as "call"/"phone"/"tel"
7       [ADDRESS]   ``PO Box 123``; house number + capitalised street name + street suffix
                    (Street/St/Ave/Road/...), with optional unit (Apt/Unit/Suite/Flat), city, US state +
                    ZIP or UK postcode; German ``Hauptstraße 5, 10115 Berlin``; French ``12 rue de la
                    Paix, 75002 Paris``; Spanish/Italian ``Calle Mayor 10, 28013 Madrid``, ``Via Roma 12``;
                    and ``Springfield, IL 62704`` (city, US state code, ZIP) on its own
======  ==========  ===============================================================================

Phone shapes require at least 9 digits in separated groups (7 for ``555-1234``, whose first digit is 2-9
and which is never part of a longer dashed code), so dates (``2026-03-14``, ``14/03/2026``), prices,
quantities and order numbers (``#A12345``, ``order 123456``, ``Order no. 4471234567``) are left alone; a
contiguous run is a phone only with a trunk ``0`` and 10-11 digits, or as a 10-digit North American number
that no reference word precedes.

What a rule-based scrubber does not catch: names, free-form addresses without a house number or street
type, and lowercase street names (``742 evergreen terrace``). The tests (``tests/pii_corpus.py``) fail
on any surviving fragment of a planted value (a digit run of a number, a ZIP, the local part of an
e-mail), not only on the whole value.

``load_scrubber`` builds a scrubber from specs: ``"default"``, ``"none"`` (only on its own, to turn
scrubbing off explicitly) or ``"package.module:function"`` for a user callable; several specs chain.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rlhf.core.errors import UserError

__all__ = [
    "PIIConfigError",
    "RegexScrubber",
    "ScrubResult",
    "Scrubber",
    "default_scrubber",
    "iban_is_valid",
    "load_scrubber",
    "luhn_is_valid",
    "run_scrubber",
    "scrub_many",
]


class PIIConfigError(UserError):
    """A scrubber spec that cannot be loaded; the message names the spec and the accepted forms."""


@dataclass(frozen=True)
class ScrubResult:
    """Scrubbed text and how many spans of each kind were replaced (kind -> count)."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class Scrubber(Protocol):
    """Anything that maps a text to its scrubbed form."""

    def __call__(self, text: str) -> ScrubResult | str: ...


def luhn_is_valid(digits: str) -> bool:
    """Luhn (mod 10) check of a string of decimal digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_is_valid(iban: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters A=10..Z=35, mod 97 == 1."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+ ?@ ?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# "jane(at)example(dot)com", "jane [at] example [dot] com", "jane at example dot com": a bracketed "at" may
# come with real dots, a bare " at " only with a spelled-out " dot " before a known top-level domain, and not
# after words that are followed by "at" in plain English ("look at", "me at", "arrived at")
_AT_BRACKET = r"\s?[(\[]at[)\]]\s?"
_DOT_WORD = r"(?:\s?[(\[]dot[)\]]\s?|\s+dot\s+)"
_TLD = r"(?:com|org|net|edu|gov|io|co|uk|de|fr|es|it|nl|ch|be|eu|info|biz|me|us|ca|au|in|cn|jp|ru|br|pl|se|dk|fi|no)"
_NOT_LOCAL = (
    r"(?:i|me|you|us|we|him|her|them|they|it|is|are|was|were|be|been|look|looked|looking|stare|stared|meet|met|"
    r"arrive|arrived|stay|stayed|live|lived|lives|work|worked|works|shop|shopped|buy|bought|find|found|here|there|"
    r"online|and|or|but|available|sold|listed|posted)"
)
_EMAIL_SPELLED = re.compile(
    r"(?<![\w.+-])(?:"
    rf"[A-Za-z0-9._%+-]+{_AT_BRACKET}[A-Za-z0-9-]+(?:(?:{_DOT_WORD}|\.)[A-Za-z0-9-]+)*?(?:{_DOT_WORD}|\.){_TLD}"
    rf"|(?!{_NOT_LOCAL}\s)[A-Za-z0-9._%+-]+\s+at\s+[A-Za-z0-9-]+(?:{_DOT_WORD}[A-Za-z0-9-]+)*?{_DOT_WORD}{_TLD}"
    r")\b",
    re.IGNORECASE,
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.IGNORECASE)
_CARD = re.compile(
    r"(?<![\w-])(?<!\d[ -])(?:\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?|\d{4}[ -]\d{6}[ -]\d{4,5}|\d{13,19})(?![\w-])"
)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w.]*\d)")
_VERSION_BEFORE = re.compile(r"\b(?:version|ver\.?|build|v)\s*$", re.IGNORECASE)
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}"  # +44 20 7946 0958, +1 (555) 123-4567, +49-30-1234567
    r"|(?:1[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # (555) 123-4567, 555.123.4567
    r"|\(0\d{1,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"  # (020) 7946 0958
    r"|0\d{1,4}(?:[ .-]\d{2,4}){2,4}"  # 020 7946 0958, 06 12 34 56 78, 030-123-4567
    r"|0\d{2,4}[ .-]\d{5,8}"  # 07700 900123, 0800 1234567
    r"|0[1-9]\d{8,9}"  # 0612345678, 07700900123: a trunk-prefixed national number written without gaps
    r")(?![\w-])"
)
_PHONE_LOCAL = re.compile(r"(?<![\w+.-])(?<!\d[ .-])[2-9]\d{2}[-.]\d{4}(?![\w-]|\.\d)")  # US local 555-1234
# a North American number written without gaps (the area code starts with 2-9), unless a word
# before it says it is an order, invoice, tracking, ticket or other reference number
_PHONE_NANP = re.compile(r"(?<![\w+.-])[2-9]\d{9}(?![\w-]|\.\d)")
_REFERENCE_BEFORE = re.compile(
    r"(?i)\b(?:order|invoice|tracking|ref|reference|ticket|case|sku|item|id|account|acct|customer|serial)"
    r"\.?(?:\s*(?:no|nr|number|num|id)\b\.?)?\s*[:#]?\s*$|#\s*$"
)
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|text|whatsapp|fax)\b[^\w\n]{0,4}"  # the phone word
    r"(?:(?:me|us|at|on|is|number|no)\b[^\w\n]{0,3}){0,3}"  # filler: "me at", "number is"
    r"(\+?\d[\d .-]{5,18}\d)(?![\w-])"
)
_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Ter|"
    r"Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Close|Crescent|Cres|Gardens|Grove|Row|Trail|Trl|Alley|"
    r"Plaza|Walk|Mews|Hill)"
)
_NAME_WORD = r"(?:[A-Z][A-Za-z'’-]*\.?|\d{1,3}(?:st|nd|rd|th))"
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}"
_ADDRESS = re.compile(
    r"(?:\b(?:Flat|Apt|Apartment|Unit|Suite)\.? ?#?[\w-]+,? )?"  # leading unit: "Flat 3, "
    r"\b\d{1,6}[A-Za-z]?(?:-\d{1,5})?,? "  # house number
    rf"{_NAME_WORD}(?: {_NAME_WORD}){{0,3}} {_SUFFIX}\b\.?"  # street name + suffix
    r"(?: (?:N|S|E|W|NE|NW|SE|SW)\b)?"
    r"(?:,? (?:Apt|Apartment|Unit|Suite|Ste|Flat|Floor|Fl|Room|Rm|#)\.? ?#?[\w-]+)?"  # trailing unit
    r"(?:, [A-Z][a-z][A-Za-z'’-]*(?: [A-Z][a-z][A-Za-z'’-]*){0,2})?"  # city
    rf"(?:,? (?:[A-Z]{{2}} \d{{5}}(?:-\d{{4}})?|{_UK_POSTCODE}|\d{{5}}))?"  # state + ZIP / postcode / ZIP
)
_ADDRESS_DE = re.compile(
    r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm)(?: \d{1,4}[a-z]?)"
    r"(?:, \d{5} [A-ZÄÖÜ][a-zäöüß]+)?"
)
# any case for words that are street types only in French; lowercase only for those English also uses
_FR_STREET = r"(?:(?i:rue|allée|allee|impasse|chemin|quai|bd|av\.)|avenue|boulevard|place|route)"
_PARTICLE = r"(?:(?:de|du|des|la|le|les|l'|l’|d'|d’|del|de la|della|dei|di|delle)\s?)"
_CAP_WORD = r"[A-ZÀ-Ý][\w'’-]*"
_POST_CITY = rf"(?:,? \d{{5}} {_CAP_WORD}(?: {_CAP_WORD})?)"  # 75002 Paris, 28013 Madrid
# French: "12 rue de la Paix, 75002 Paris", "8 bis avenue des Champs-Élysées"
_ADDRESS_FR = re.compile(
    rf"\b\d{{1,4}}(?: ?(?:bis|ter))?,? {_FR_STREET} {_PARTICLE}*{_CAP_WORD}(?: {_PARTICLE}*{_CAP_WORD}){{0,3}}"
    rf"{_POST_CITY}?"
)
# Spanish/Italian/Portuguese: "Calle Mayor 10, 28013 Madrid", "Via Roma 12, 00184 Roma"
_ADDRESS_SOUTH = re.compile(
    r"\b(?:Calle|C/|Avenida|Avda\.|Plaza|Paseo|Carrer|Rua|Via|Viale|Piazza|Corso|Largo)"
    r"(?! (?:E-?mail|Phone|Text|SMS|Post|Mail|Chat|Twitter|Facebook|WhatsApp|Slack|Zoom|Teams|UPS|FedEx|DHL|USPS|"
    r"Amazon|PayPal|Google|Apple)\b)"
    rf" {_PARTICLE}*{_CAP_WORD}(?: {_PARTICLE}*{_CAP_WORD}){{0,3}},? \d{{1,4}}[A-Za-z]?\b{_POST_CITY}?"
)
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|"
    "OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI"
)
# "Springfield, IL 62704" on its own (the street may be elsewhere or absent): city, state code, ZIP
_CITY_STATE_ZIP = re.compile(rf"\b[A-Z][a-z]+(?: [A-Z][a-z]+){{0,2}}, (?:{_US_STATES}) \d{{5}}(?:-\d{{4}})?\b")
_PO_BOX = re.compile(r"\bP\.? ?O\.? Box \d{1,6}\b", re.IGNORECASE)


def _valid_card_prefix(text: str) -> str | None:
    """Longest leading run of digit groups that is a plausible card number, or None."""
    groups = re.split(r"[ -]", text)
    for end in range(len(groups), 0, -1):
        digits = "".join(groups[:end])
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_is_valid(digits):
            return " ".join(groups[:end]) if " " in text else "-".join(groups[:end])
    return None


def _valid_iban_prefix(text: str) -> str | None:
    """Longest leading run of space-separated groups that passes the IBAN check, or None.

    The account part must hold at least 8 digits (every country's does), so that words matched
    case-insensitively ("ab12 this that ...") never pass on the 1-in-97 chance of the check."""

    def ok(candidate: str) -> bool:
        return sum(ch.isdigit() for ch in candidate[4:]) >= 8 and iban_is_valid(candidate)

    if " " not in text:
        return text if ok(text) else None
    groups = text.split(" ")
    for end in range(len(groups), 1, -1):
        candidate = " ".join(groups[:end])
        if ok(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class RegexScrubber:
    """The default scrubber: ordered regular-expression rules with validation (see the module docstring)."""

    def __call__(self, text: str) -> ScrubResult:
        counts: Counter[str] = Counter()

        def sub(pattern: re.Pattern[str], kind: str, text: str, accept: Callable[[re.Match[str]], str | None]) -> str:
            def repl(match: re.Match[str]) -> str:
                span = accept(match)
                if span is None:
                    return match.group(0)
                counts[kind] += 1
                return f"[{kind}]" + match.group(0)[len(span) :]

            return pattern.sub(repl, text)

        whole: Callable[[re.Match[str]], str | None] = lambda m: m.group(0)
        text = sub(_EMAIL, "EMAIL", text, whole)
        text = sub(_EMAIL_SPELLED, "EMAIL", text, whole)
        text = sub(_IBAN, "IBAN", text, lambda m: _valid_iban_prefix(m.group(0)))
        text = sub(_CARD, "CARD", text, lambda m: _valid_card_prefix(m.group(0)))
        text = sub(_SSN, "SSN", text, whole)
        text = sub(_IPV4, "IP", text, _accept_ip)
        text = sub(_PHONE, "PHONE", text, _accept_phone)
        text = sub(_PHONE_LOCAL, "PHONE", text, whole)
        text = sub(_PHONE_NANP, "PHONE", text, _accept_nanp)
        text = _sub_context_phone(text, counts)
        text = sub(_PO_BOX, "ADDRESS", text, whole)
        text = sub(_ADDRESS, "ADDRESS", text, whole)
        text = sub(_ADDRESS_DE, "ADDRESS", text, whole)
        text = sub(_ADDRESS_FR, "ADDRESS", text, whole)
        text = sub(_ADDRESS_SOUTH, "ADDRESS", text, whole)
        text = sub(_CITY_STATE_ZIP, "ADDRESS", text, whole)
        return ScrubResult(text=text, counts=dict(counts))


def _accept_ip(match: re.Match[str]) -> str | None:
    before = match.string[max(0, match.start() - 16) : match.start()]
    return None if _VERSION_BEFORE.search(before) else match.group(0)


def _accept_phone(match: re.Match[str]) -> str | None:
    span = match.group(0)
    digits = sum(ch.isdigit() for ch in span)
    return span if 9 <= digits <= 15 else None


def _accept_nanp(match: re.Match[str]) -> str | None:
    before = match.string[max(0, match.start() - 24) : match.start()]
    return None if _REFERENCE_BEFORE.search(before) else match.group(0)


def _sub_context_phone(text: str, counts: Counter[str]) -> str:
    """Replace digit runs that follow a phone word ("call 5551234567"), keeping the word itself."""

    def repl(match: re.Match[str]) -> str:
        number = match.group(1)
        if not 7 <= sum(ch.isdigit() for ch in number) <= 15:
            return match.group(0)
        counts["PHONE"] += 1
        start = match.start(1) - match.start(0)
        return match.group(0)[:start] + "[PHONE]"

    return _PHONE_CONTEXT.sub(repl, text)


default_scrubber = RegexScrubber()


@dataclass(frozen=True)
class _Named:
    """A user callable wrapped so that it returns a ScrubResult; a plain string result counts as one edit."""

    spec: str
    fn: Callable[[str], ScrubResult | str]

    def __call__(self, text: str) -> ScrubResult:
        out = self.fn(text)
        if isinstance(out, ScrubResult):
            return out
        if not isinstance(out, str):
            raise PIIConfigError(
                f"scrubber '{self.spec}' returned {type(out).__name__}; it must return str or ScrubResult"
            )
        return ScrubResult(text=out, counts={self.spec: 1} if out != text else {})


@dataclass(frozen=True)
class _Chain:
    """Scrubbers applied in order; counts are summed."""

    parts: tuple[Callable[[str], ScrubResult], ...]

    def __call__(self, text: str) -> ScrubResult:
        counts: Counter[str] = Counter()
        for part in self.parts:
            result = part(text)
            text = result.text
            counts.update(result.counts)
        return ScrubResult(text=text, counts=dict(counts))


def _identity(text: str) -> ScrubResult:
    return ScrubResult(text=text, counts={})


def _load_one(spec: str) -> Callable[[str], ScrubResult]:
    if spec == "default":
        return default_scrubber
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PIIConfigError(f"unknown scrubber spec '{spec}'; use 'default', 'none', or 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PIIConfigError(f"scrubber '{spec}': cannot import module '{module_name}' ({exc})") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise PIIConfigError(f"scrubber '{spec}': module '{module_name}' has no callable '{attr}'")
    return _Named(spec=spec, fn=fn)


def load_scrubber(spec: str | Sequence[str]) -> Callable[[str], ScrubResult]:
    """Build a scrubber from ``"default"``, ``"none"``, ``"module:function"`` or several of them.

    Several specs are given as a list or a comma-separated string and run in order. ``"none"``
    disables scrubbing and must stand alone, so it cannot hide inside a chain by mistake.
    """
    specs = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    if not specs or any(not s for s in specs):
        raise PIIConfigError(
            f"empty scrubber spec in {spec!r}; name 'default', 'none' or 'package.module:function' explicitly"
        )
    if "none" in specs:
        if len(specs) > 1:
            raise PIIConfigError(f"scrubber spec 'none' cannot be chained with others ({spec!r}); drop 'none'")
        return _identity
    parts = tuple(_load_one(s) for s in specs)
    return parts[0] if len(parts) == 1 else _Chain(parts)


def run_scrubber(scrubber: Callable[[str], ScrubResult | str], text: str) -> ScrubResult:
    """Call any scrubber and return a ScrubResult; a plain string result counts as one ``custom`` edit."""
    result = scrubber(text)
    if isinstance(result, ScrubResult):
        return result
    if not isinstance(result, str):
        raise PIIConfigError(
            f"scrubber {scrubber!r} returned {type(result).__name__}; it must return str or ScrubResult"
        )
    return ScrubResult(text=result, counts={"custom": 1} if result != text else {})


def scrub_many(texts: Iterable[str], scrubber: Callable[[str], ScrubResult | str]) -> tuple[list[str], dict[str, int]]:
    """Scrub every text; return the scrubbed texts and the summed counts per kind."""
    out: list[str] = []
    counts: Counter[str] = Counter()
    for text in texts:
        result = run_scrubber(scrubber, text)
        out.append(result.text)
        counts.update(result.counts)
    return out, dict(counts)
