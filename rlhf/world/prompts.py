"""Customer prompts of the demo world: slot pools, templates, a seeded generator and a text parser.

`generate_prompts(n, seed)` balances the intents exactly (each appears n // 6 or n // 6 + 1 times, in a
seeded order) and fills a random template of the intent with random slots. Prompts stay under 40 words.

`parse_prompt(text)` recovers the intent, the customer's name, the order number and the product from the raw
text alone, because later stages hand the rubric only strings (possibly wrapped in a chat template). The
intent comes from prompt-side keywords: the intent with the most distinct keyword hits wins, ties go to the
more specific intent (order of `_PRIORITY`), no hit gives `UNKNOWN_INTENT`. Every template carries keywords
of its own intent only, which the test suite checks on generated prompts.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

from rlhf.world.policy import INTENTS, UNKNOWN_INTENT

NAMES: tuple[str, ...] = (
    "Priya",
    "Tomasz",
    "Aisha",
    "Mateo",
    "Chloe",
    "Kwame",
    "Ingrid",
    "Hiroshi",
    "Fatima",
    "Liam",
    "Sofia",
    "Dmitri",
    "Amara",
    "Oliver",
    "Mei",
    "Rahul",
    "Zara",
    "Lucas",
    "Nadia",
    "Ethan",
    "Yusuf",
    "Elena",
    "Kofi",
    "Hannah",
    "Diego",
    "Leila",
    "Arjun",
    "Freya",
    "Omar",
    "Isla",
    "Jonas",
    "Ana",
    "Callum",
    "Sakura",
    "Tariq",
    "Nora",
    "Malik",
    "Emeka",
    "Astrid",
    "Bilal",
    "Carmen",
    "Felix",
    "Greta",
    "Ivan",
    "Jasmine",
    "Kenji",
    "Lucia",
    "Marek",
    "Niamh",
    "Olga",
    "Pedro",
    "Sanjay",
    "Thea",
    "Wei",
    "Yara",
)
PRODUCTS: tuple[str, ...] = (
    "desk lamp",
    "blender",
    "yoga mat",
    "wireless headset",
    "coffee grinder",
    "rain jacket",
    "hiking backpack",
    "phone case",
    "water bottle",
    "throw blanket",
    "sports bag",
    "electric kettle",
    "bookshelf",
    "smart watch",
    "Bluetooth speaker",
    "electric toothbrush",
    "air fryer",
    "wool scarf",
    "office chair",
    "cast iron pan",
    "table fan",
    "camera tripod",
    "gaming mouse",
    "duvet cover",
)
CITIES: tuple[str, ...] = (
    "Leeds",
    "Cork",
    "Glasgow",
    "Bristol",
    "Cardiff",
    "Belfast",
    "York",
    "Brighton",
    "Dundee",
    "Galway",
    "Norwich",
    "Exeter",
    "Oxford",
    "Derby",
    "Aberdeen",
    "Swansea",
    "Limerick",
    "Plymouth",
    "Inverness",
    "Kendal",
)
METHODS: tuple[str, ...] = ("card", "debit card", "credit card", "PayPal", "Apple Pay")
MONTHS: tuple[str, ...] = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_ORDER_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"

TEMPLATES: dict[str, tuple[str, ...]] = {
    "order_status": (
        "Hi, I'm {name}. Where is my order {order}? I ordered {a_product} on {date}.",
        "{name} here. Can you give me an update on order {order}? I placed it on {date}.",
        "Hello, this is {name}. What is the status of my order {order} for {a_product}?",
        "Hi, can I track order {order}? I bought {a_product} on {date}. Thanks, {name}",
        "My order {order} still hasn't arrived. Where is it? - {name}",
        "Hi, I'm {name}. Any news on order {order}? It was placed on {date}.",
    ),
    "returns": (
        "Hi, I'm {name}. Can I return the {product} from order {order}?",
        "{name} here. The {product} I bought on {date} is not right for me. How do I send it back?",
        "Hello, this is {name}. What is your return policy for {a_product}?",
        "I'd like to return my {product}, order {order}. How long do I have? Thanks, {name}",
        "Hi, I changed my mind about the {product} I got on {date}. Can I return it? - {name}",
    ),
    "shipping": (
        "Hi, I'm {name}. How long does delivery to {city} take?",
        "{name} here. If I order {a_product} today, when will it be delivered to {city}?",
        "Hello, this is {name}. How long is standard shipping to {city}?",
        "What are your shipping times to {city}? Thanks, {name}",
        "Hi, I want to buy {a_product}. How fast is delivery to {city}? - {name}",
    ),
    "payments": (
        "Hi, I'm {name}. I was charged twice for order {order}. When will I get my money back?",
        "{name} here. When will the refund for order {order} reach my {method}?",
        "Hello, this is {name}. I paid {amount} by {method} for order {order} but it failed. Is it refunded?",
        "I was charged {amount} twice for order {order}. How do refunds work? Thanks, {name}",
        "Hi, when will my refund of {amount} for order {order} arrive? - {name}",
    ),
    "cancellations": (
        "Hi, I'm {name}. Can I cancel order {order}?",
        "{name} here. I ordered {a_product} on {date} by mistake. Can you cancel it?",
        "Hello, this is {name}. How do I cancel my order {order} for the {product}?",
        "I want to cancel order {order}. Is there a fee? Thanks, {name}",
        "Hi, I no longer need the {product}. Can you cancel order {order}? - {name}",
    ),
    "warranty": (
        "Hi, I'm {name}. My {product} stopped working. Is it under warranty?",
        "{name} here. The {product} I bought on {date} is faulty. What does the warranty cover?",
        "Hello, this is {name}. How long is the warranty on {a_product}?",
        "My {product} from order {order} broke after a month. Is it covered? Thanks, {name}",
        "Hi, does the {product} come with a guarantee? - {name}",
    ),
}

_KEYWORDS: dict[str, tuple[re.Pattern[str], ...]] = {
    intent: tuple(re.compile(p) for p in patterns)
    for intent, patterns in {
        "order_status": (
            r"\bwhere(?:'s| is)\b",
            r"\bstatus\b",
            r"\btrack\b",
            r"\bupdate on\b",
            r"\b(?:hasn't|has not|not) arrived\b",
            r"\bany news on\b",
            r"\bstill waiting\b",
        ),
        "returns": (r"\breturn\w*", r"\bsend (?:it|them) back\b"),
        "shipping": (r"\bshipping\b", r"\bdeliver\w*", r"\bship\b"),
        "payments": (r"\bcharged\b", r"\bpaid\b", r"\bpayment\b", r"\brefund\w*", r"\bmoney back\b"),
        "cancellations": (r"\bcancel\w*",),
        "warranty": (r"\bwarrant\w*", r"\bguarantee\b", r"\bstopped working\b", r"\bbroken?\b", r"\bfaulty\b"),
    }.items()
}
_PRIORITY: tuple[str, ...] = ("cancellations", "returns", "warranty", "payments", "shipping", "order_status")

_NAME_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"\bI'm ([A-Z][a-z]+)\b",
        r"\bI am ([A-Z][a-z]+)\b",
        r"\b[Tt]his is ([A-Z][a-z]+)\b",
        r"\b[Mm]y name is ([A-Z][a-z]+)\b",
        r"(?:^|[\n.!?]\s*)([A-Z][a-z]+) here\b",
        r"\b(?:Thanks|Thank you|Cheers|Regards),\s*([A-Z][a-z]+)\b",
        r"(?:^|\s)[-–—]\s*([A-Z][a-z]+)\b",
    )
)
ORDER_NUMBER = re.compile(r"(?<![A-Za-z0-9])#?([A-Z]\d{5})\b")
_PRODUCTS_LONGEST_FIRST = sorted(PRODUCTS, key=len, reverse=True)


@dataclass(frozen=True)
class DemoPrompt:
    """One customer message; `id` is a content hash of intent and text, stable across runs and machines."""

    text: str
    intent: str
    slots: dict[str, str] = field(hash=False)
    id: str = ""

    def __post_init__(self) -> None:
        if self.intent not in INTENTS:
            raise ValueError(f"unknown intent {self.intent!r}; use one of {', '.join(INTENTS)}")
        if not self.text.strip():
            raise ValueError("prompt text is empty; give the customer's message")
        if not self.id:
            object.__setattr__(self, "id", prompt_id(self.text, self.intent))


@dataclass(frozen=True)
class ParsedPrompt:
    """What the rubric recovers from a prompt's raw text; None where the text does not say."""

    intent: str
    name: str | None
    order: str | None  # without the leading '#'
    product: str | None  # lower-case, from PRODUCTS


def prompt_id(text: str, intent: str) -> str:
    """First 12 hex digits of the SHA-1 of intent and text."""
    return hashlib.sha1(f"{intent}\n{text}".encode()).hexdigest()[:12]


def _with_article(product: str) -> str:
    return ("an " if product[0].lower() in "aeiou" else "a ") + product


def _fill(template: str, rng: random.Random) -> tuple[str, dict[str, str]]:
    product = rng.choice(PRODUCTS)
    values = {
        "name": rng.choice(NAMES),
        "order": f"#{rng.choice(_ORDER_LETTERS)}{rng.randint(10000, 99999)}",
        "product": product,
        "a_product": _with_article(product),
        "date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)}",
        "city": rng.choice(CITIES),
        "method": rng.choice(METHODS),
        "amount": f"£{rng.randint(8, 250)}.{rng.choice(('00', '49', '99'))}",
    }
    used = set(re.findall(r"{(\w+)}", template))
    slots = {("product" if k == "a_product" else k): values[("product" if k == "a_product" else k)] for k in used}
    return template.format(**values), dict(sorted(slots.items()))


def generate_prompts(n: int, seed: int) -> list[DemoPrompt]:
    """`n` prompts, intents balanced, deterministic for a given `seed`."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(seed)
    intents = [INTENTS[i % len(INTENTS)] for i in range(n)]
    rng.shuffle(intents)
    prompts = []
    for intent in intents:
        text, slots = _fill(rng.choice(TEMPLATES[intent]), rng)
        prompts.append(DemoPrompt(text=text, intent=intent, slots=slots))
    return prompts


def intent_of(prompt_text: str) -> str:
    """The intent a prompt asks about, from its keywords; `UNKNOWN_INTENT` when none is recognised."""
    lowered = prompt_text.lower()
    hits = {intent: sum(1 for p in patterns if p.search(lowered)) for intent, patterns in _KEYWORDS.items()}
    best = max(hits.values())
    if best == 0:
        return UNKNOWN_INTENT
    return next(intent for intent in _PRIORITY if hits[intent] == best)


def parse_prompt(prompt_text: str) -> ParsedPrompt:
    """Intent, customer name, order number and product recovered from raw prompt text."""
    if not isinstance(prompt_text, str):
        raise TypeError(f"prompt must be a str, got {type(prompt_text).__name__}")
    name = next((m.group(1) for p in _NAME_PATTERNS if (m := p.search(prompt_text))), None)
    if name is None:
        name = next((n for n in NAMES if re.search(rf"\b{n}\b", prompt_text)), None)
    order = ORDER_NUMBER.search(prompt_text)
    lowered = prompt_text.lower()
    product = next((p.lower() for p in _PRODUCTS_LONGEST_FIRST if p.lower() in lowered), None)
    return ParsedPrompt(intent_of(prompt_text), name, order.group(1) if order else None, product)


def to_chat(prompt_text: str) -> list[dict[str, str]]:
    """The prompt as a one-message chat: [{"role": "user", "content": prompt_text}]."""
    if not isinstance(prompt_text, str) or not prompt_text.strip():
        raise ValueError("prompt_text must be a non-empty string holding the customer's message")
    return [{"role": "user", "content": prompt_text}]
