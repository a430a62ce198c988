"""A planted PII corpus and the partial-leak check that every scrubber test uses.

Each :class:`Planted` item is one personal value embedded in a realistic sentence, with the ordinary text of
that sentence that must survive scrubbing (``keep``: years, prices, model names, order numbers). The check is
stricter than "the whole value is gone": :func:`leaks` lists every *identifying fragment* of the value that
is still in the scrubbed text, so a scrubber that removes ``742 Evergreen Terrace`` but leaves
``Springfield, IL 62704`` fails.

Identifying fragments, by kind:

* numbers (PHONE, CARD, IBAN, SSN, IP): every run of 4 consecutive digits of the value (letters, as in
  ``GB82WEST1234...``, break a run; separators do not), looked for in the scrubbed text with separators (space, dot, dash, slash, parentheses) removed between digits, so a surviving
  ``7946 0958`` or ``53 00`` of a phone is found in whatever spacing it kept. A country code or a 3-digit
  group alone is not a fragment.
* EMAIL: the local part, each of its pieces of 3+ characters (``john``, ``smith`` of ``john.smith+orders``)
  and each domain label of 4+ characters, except generic words (``mail``, ``team``, ``support``; ``example``
  is *not* generic: it is the planted domain); case-insensitive, so ``JANE`` left over from ``JANE@EXAMPLE.COM`` counts.
* ADDRESS: given per item: the house number with the street, the street name, and the ZIP/postcode. The city
  alone is not a fragment (it does not single out a person, and ordinary text names cities).

Obfuscated e-mails (``jane at example dot com``, ``jane(at)example(dot)com``) are planted too: people write
them to dodge spam filters, and they identify a person as well as the plain form. Names alone (``Klaus``) are
out of scope for the rule-based scrubber and are never a fragment here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CORPUS", "KINDS", "REPLIES", "Planted", "leaks", "lost"]

KINDS = ("EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "ADDRESS")
_NUMERIC = {"PHONE", "CARD", "IBAN", "SSN", "IP"}
_GENERIC = {"mail", "email", "post", "info", "team", "support", "contact", "admin", "sales"}  # not identifying
# digits joined by at most two separator characters: the spacing a leaked number may keep
_NUMBER_RUN = re.compile(r"\d(?:[ .\-/()]{0,2}\d)*")
_EMAIL_PARTS = re.compile(r"^(?P<local>.+?)\s*(?:@|\(at\)|\[at\]|\sat\s)\s*(?P<domain>.+)$", re.IGNORECASE)
_DOT = re.compile(r"\s*(?:\(dot\)|\[dot\]|\sdot\s|\.)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Planted:
    """One personal value in a sentence (``{}`` marks where it goes)."""

    kind: str
    value: str
    sentence: str
    keep: tuple[str, ...] = ()  # ordinary text of the sentence that must survive
    parts: tuple[str, ...] = ()  # ADDRESS: street with number, street name, postcode (see the module doc)

    @property
    def text(self) -> str:
        return self.sentence.format(self.value)

    def fragments(self) -> tuple[str, ...]:
        """The identifying fragments of the value (see the module docstring)."""
        if self.kind in _NUMERIC:
            runs = [re.sub(r"\D", "", run) for run in _NUMBER_RUN.findall(self.value)]
            return tuple(dict.fromkeys(run[i:i + 4] for run in runs for i in range(len(run) - 3)))
        if self.kind == "EMAIL":
            match = _EMAIL_PARTS.match(self.value)
            if match is None:
                raise ValueError(f"planted e-mail {self.value!r} has no local part and domain")
            local = match["local"]
            labels = _DOT.split(match["domain"])
            pieces = [p for p in re.split(r"[._+\-]", local) if len(p) >= 3 and p.lower() not in _GENERIC]
            domain_labels = [lab for lab in labels[:-1] if len(lab) >= 4 and lab.lower() not in _GENERIC]
            return tuple(dict.fromkeys([local, *pieces, *domain_labels]))
        if self.kind == "ADDRESS":
            if not self.parts:
                raise ValueError(f"planted address {self.value!r} names no fragments")
            return self.parts
        raise ValueError(f"unknown planted kind {self.kind!r}")


def leaks(item: Planted, scrubbed: str) -> list[str]:
    """The identifying fragments of ``item`` still present in ``scrubbed`` (empty: nothing leaked)."""
    if item.kind in _NUMERIC:
        numbers = [re.sub(r"\D", "", run) for run in _NUMBER_RUN.findall(scrubbed)]
        return [frag for frag in item.fragments() if any(frag in number for number in numbers)]
    lowered = scrubbed.lower()
    return [frag for frag in item.fragments() if frag.lower() in lowered]


def lost(item: Planted, scrubbed: str) -> list[str]:
    """The ordinary text of ``item`` that scrubbing removed (empty: nothing over-scrubbed)."""
    return [word for word in item.keep if word not in scrubbed]


# A model's replies: three echo the value in a neutral context (no "call", "IBAN", "address" next to it),
# one echoes the whole sentence. The scrubber must find the value without the sentence's hints.
REPLIES = (
    "Noted: {value}. Our team will follow up within 2 business days.",
    'Thanks! To confirm, you wrote: "{text}"',
    "Sorry for the trouble. I have updated your record to {value} and closed the ticket.",
    "Got it ({value}). Is there anything else I can help with today?",
)


def _p(kind: str, value: str, sentence: str, keep: tuple[str, ...] = (), parts: tuple[str, ...] = ()) -> Planted:
    return Planted(kind, value, sentence, keep, parts)


CORPUS: tuple[Planted, ...] = (
    # ----------------------------------------------------------------------------------------- e-mail
    _p("EMAIL", "jane.doe@example.com", "Please reply to {} as soon as you can, I ordered in March 2025.",
       ("March 2025",)),
    _p("EMAIL", "JOHN.SMITH+orders@Example.CO.UK", "My login is {}, I forgot the password for the Pixel 8.",
       ("Pixel 8",)),
    _p("EMAIL", "support-team@mail.shop-example.io", "I already wrote to {} twice about the $129.00 refund.",
       ("$129.00",)),
    _p("EMAIL", "a_b.carter@sub.domain.org", "Send the invoice to <{}> for order #A12345.", ("#A12345",)),
    _p("EMAIL", "x99@testmail.de", "({}) is my backup address since 2019.", ("since 2019",)),
    _p("EMAIL", "MARIA.GARCIA@CORREO.ES", "Escríbame a {} antes del 15 de mayo.", ("15 de mayo",)),
    _p("EMAIL", "li.wei@eng.research.tsinghua.edu.cn", "Contact {} about the GPT-4 benchmark.", ("GPT-4 benchmark",)),
    _p("EMAIL", "olivia.brown@outlook.com", "The footer link says mailto:{} and it opens Windows 11.",
       ("Windows 11",)),
    _p("EMAIL", "jane.roe @ fastmail.com", "Typed with spaces: {} (the form rejected it 3 times).", ("3 times",)),
    _p("EMAIL", "peter.kowalski at gmail dot com", "Write to me, {}, I check it every 24 hours.", ("24 hours",)),
    _p("EMAIL", "anna(at)mueller-family(dot)de", "Unsere Adresse ist {} seit 2018.", ("seit 2018",)),
    _p("EMAIL", "tom.hardy [at] protonmail [dot] com", "Reach me via {}; my old iPhone 12 broke.", ("iPhone 12",)),
    # ----------------------------------------------------------------------------------------- phone
    _p("PHONE", "555-1234", "My number is {} if the 2 parcels arrive late.", ("2 parcels",)),
    _p("PHONE", "555.1234", "Call {} after 6 pm, the Model 3 is in the garage.", ("6 pm", "Model 3")),
    _p("PHONE", "(555) 123-4567", "My number is {} if you need it before 2026.", ("2026",)),
    _p("PHONE", "555 123 4567", "Text {} when the 4K monitor ships.", ("4K monitor",)),
    _p("PHONE", "555.123.4567", "Reach me at {} about the $19.99 charge.", ("$19.99",)),
    _p("PHONE", "+1-555-123-4567", "The courier can ring {} on arrival at 10:30.", ("10:30",)),
    _p("PHONE", "1-800-555-0199", "I called {} and nobody answered for 45 minutes.", ("45 minutes",)),
    _p("PHONE", "+44 20 7946 0958", "Call me on {} after six, about invoice INV-2026-000123.",
       ("INV-2026-000123",)),
    _p("PHONE", "+44 (0)20 7946 0958", "Our desk: {}, open 9.30-17.00.", ("9.30-17.00",)),
    _p("PHONE", "020 7946 0958", "Landline {} is best, the RTX 4090 box is huge.", ("RTX 4090",)),
    _p("PHONE", "+33 1 42 68 53 00", "Le standard à Paris: {}, depuis 2012.", ("depuis 2012",)),
    _p("PHONE", "+33 6 12 34 56 78", "French mobile {} works too for the 3 tickets.", ("3 tickets",)),
    _p("PHONE", "06 12 34 56 78", "Mon portable: {} merci, commande de 49,90 €.", ("49,90 €",)),
    _p("PHONE", "06.12.34.56.78", "Rappelez-moi au {} pour le colis de 2 kg.", ("2 kg",)),
    _p("PHONE", "0612345678", "Mon numéro est {}, la facture fait 120 euros.", ("120 euros",)),
    _p("PHONE", "07700 900123", "My mobile is {} and the order was 3 chairs.", ("3 chairs",)),
    _p("PHONE", "+49 30 1234567", "Office line {}, ask for Klaus about the 2024 contract.", ("2024 contract",)),
    _p("PHONE", "+49 (0)89 2180 3344", "Rufen Sie {} an, Termin am 14.03.2026.", ("14.03.2026",)),
    _p("PHONE", "+91 98765 43210", "WhatsApp me at {} for the 500 GB plan.", ("500 GB",)),
    _p("PHONE", "+61 2 9374 4000", "The Sydney office is {}, ticket priority 2.", ("priority 2",)),
    _p("PHONE", "5551234567", "please call me {} tomorrow, order 908070 is late", ("order 908070",)),
    # ----------------------------------------------------------------------------------------- cards
    _p("CARD", "4111 1111 1111 1111", "I paid with {} and it was charged twice in 2025.", ("2025",)),
    _p("CARD", "5555-5555-5555-4444", "Card {} expires 04/27.", ("04/27",)),
    _p("CARD", "3782 822463 10005", "My Amex {} was declined for the $850 laptop.", ("$850",)),
    _p("CARD", "6011111111111117", "Discover card {}, please refund the 2 items.", ("2 items",)),
    _p("CARD", "4012 8888 8888 1881", "Use {} for the replacement order A-778899.", ("A-778899",)),
    _p("CARD", "2223003122003222", "New Mastercard number {} for the Galaxy S23.", ("Galaxy S23",)),
    # ----------------------------------------------------------------------------------------- IBAN
    _p("IBAN", "DE89 3704 0044 0532 0130 00", "Refund to IBAN {} please, amount €1,249.50.", ("€1,249.50",)),
    _p("IBAN", "de89 3704 0044 0532 0130 00", "my iban is {} thanks, since 2020", ("since 2020",)),
    _p("IBAN", "GB82WEST12345698765432", "My account {} is at Westminster.", ("Westminster",)),
    _p("IBAN", "gb82west12345698765432", "iban {} for the 12 month plan", ("12 month plan",)),
    _p("IBAN", "GB82 WEST 1234 5698 7654 32", "Pay into {} before the 31st.", ("31st",)),
    _p("IBAN", "FR14 2004 1010 0505 0001 3M02 606", "Virement sur {} svp, 300 euros.", ("300 euros",)),
    _p("IBAN", "NL91ABNA0417164300", "Pay {} by Friday, invoice 2026-04.", ("2026-04",)),
    _p("IBAN", "ES91 2100 0418 4502 0005 1332", "El IBAN es {}, pedido de 2 sillas.", ("2 sillas",)),
    _p("IBAN", "CH93 0076 2011 6238 5295 7", "Swiss account {}, CHF 75.", ("CHF 75",)),
    # ----------------------------------------------------------------------------------------- address
    _p("ADDRESS", "742 Evergreen Terrace, Springfield, IL 62704", "Ship it to {} instead, 2 boxes.",
       ("2 boxes",), ("742 Evergreen Terrace", "Evergreen", "62704")),
    _p("ADDRESS", "55 W. 42nd St, Apt 4B, New York, NY 10036", "I live at {} now since 2021.",
       ("since 2021",), ("55 W. 42nd St", "42nd St", "Apt 4B", "10036")),
    _p("ADDRESS", "1600 Pennsylvania Avenue NW, Washington, DC 20500", "Bill to {} for the $59.99 order.",
       ("$59.99",), ("1600 Pennsylvania Avenue", "Pennsylvania Avenue", "20500")),
    _p("ADDRESS", "4059 Mt Lee Dr., Hollywood, CA 90068", "Old address {} is wrong since May.",
       ("since May",), ("4059 Mt Lee", "Mt Lee Dr", "90068")),
    _p("ADDRESS", "350 Fifth Avenue, Suite 3300, New York, NY 10118-0110", "Our office: {}, 3 floors.",
       ("3 floors",), ("350 Fifth Avenue", "Fifth Avenue", "Suite 3300", "10118")),
    _p("ADDRESS", "221B Baker Street, London NW1 6XE", "Deliver to {} please, the 2 lamps.",
       ("2 lamps",), ("221B Baker Street", "Baker Street", "NW1 6XE")),
    _p("ADDRESS", "Flat 3, 12 Oak Road, Manchester M1 2AB", "The parcel went to {} by mistake on Monday.",
       ("on Monday",), ("12 Oak Road", "Oak Road", "M1 2AB")),
    _p("ADDRESS", "12 rue de la Paix, 75002 Paris", "Livrez au {} avant le 3 juin.",
       ("3 juin",), ("12 rue de la Paix", "rue de la Paix", "75002")),
    _p("ADDRESS", "8 avenue des Champs-Élysées, 75008 Paris", "J'habite {} depuis 2015.",
       ("depuis 2015",), ("8 avenue des Champs-Élysées", "Champs-Élysées", "75008")),
    _p("ADDRESS", "14 boulevard Saint-Michel, 69002 Lyon", "Nouvelle adresse: {}, 2 colis.",
       ("2 colis",), ("14 boulevard Saint-Michel", "Saint-Michel", "69002")),
    _p("ADDRESS", "Hauptstraße 5, 10115 Berlin", "Lieferung an {} bitte, 3 Pakete.",
       ("3 Pakete",), ("Hauptstraße 5", "Hauptstraße", "10115")),
    _p("ADDRESS", "Lindenallee 23a, 50968 Köln", "Ich wohne in der {} seit 2017.",
       ("seit 2017",), ("Lindenallee 23a", "Lindenallee", "50968")),
    _p("ADDRESS", "Calle Mayor 10, 28013 Madrid", "Envíelo a {} antes de 2027.",
       ("2027",), ("Calle Mayor 10", "Calle Mayor", "28013")),
    _p("ADDRESS", "Via Roma 12, 00184 Roma", "Spedite a {}, 4 pacchi.",
       ("4 pacchi",), ("Via Roma 12", "00184")),
    _p("ADDRESS", "PO Box 1234", "Mail it to {} before 2026.", ("2026",), ("Box 1234", "1234")),
    # ----------------------------------------------------------------------------------------- SSN
    _p("SSN", "123-45-6789", "My SSN is {} for the 2025 tax form.", ("2025 tax form",)),
    _p("SSN", "078-05-1120", "SSN {} on file, case 77.", ("case 77",)),
    _p("SSN", "219-09-9999", "Use {} please, form W-2.", ("W-2",)),
    _p("SSN", "457-55-5462", "It says {} on my card from 1998.", ("1998",)),
    _p("SSN", "536-22-1234", "Number {}, verified on 03/14.", ("03/14",)),
    # ----------------------------------------------------------------------------------------- IP
    _p("IP", "192.168.1.10", "My router is at {} and runs firmware version 1.2.3.4.", ("version 1.2.3.4",)),
    _p("IP", "10.0.0.1", "Gateway {} is down since 08:00.", ("08:00",)),
    _p("IP", "203.0.113.77", "Login from {} was not me, I was using Chrome 120.", ("Chrome 120",)),
    _p("IP", "8.8.8.8", "DNS set to {} on my 2 laptops.", ("2 laptops",)),
    _p("IP", "172.16.254.1", "Server {} refuses connections on port 443.", ("port 443",)),
)
