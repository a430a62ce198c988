"""Style phrases of the demo world: polite and curt openers and closers, rambling filler, and their markers.

Replies are written from these pools and the gold rubric scores style with the marker patterns below, so the
two stay in one place. None of the phrases states a policy claim or mentions an intent's topic (the test
suite checks this), so style never leaks into the correctness and on-intent axes.
"""

from __future__ import annotations

import re

# Polite openers greet the customer by name; fields: name, order.
POLITE_OPENERS: tuple[str, ...] = (
    "Hi {name}, thanks for getting in touch.",
    "Hello {name}, thank you for your message.",
    "Dear {name}, thank you for contacting us.",
    "Hi {name}!",
    "Hello {name}.",
)
POLITE_OPENERS_WITH_ORDER: tuple[str, ...] = (
    "Hi {name}, thanks for reaching out about order {order}.",
    "Hello {name}, thank you for your message about order {order}.",
)
POLITE_CLOSERS: tuple[str, ...] = (
    "Have a lovely day!",
    "Kind regards.",
    "Happy to help further.",
    "Best wishes.",
    "Thanks again for shopping with us.",
)
# Curt openers and closers: no greeting, no thanks; some brusque.
CURT_OPENERS: tuple[str, ...] = ("", "", "Order {order}.", "Re: order {order}.")
CURT_OPENERS_NO_ORDER: tuple[str, ...] = ("", "", "Noted.")
CURT_CLOSERS: tuple[str, ...] = ("", "", "That's all.", "Read the policy next time.", "Nothing else to add.")

# Rambling filler: each sentence carries exactly one FILLER_MARKERS match.
FILLERS: tuple[str, ...] = (
    "As you may know, we are a small team that cares a great deal about every single customer.",
    "We always strive to go above and beyond in everything that we do here.",
    "At the end of the day, your satisfaction is what matters most to all of us.",
    "I would like to take this opportunity to mention how much we value your custom.",
    "It is worth mentioning that our team reads every message very carefully.",
    "Rest assured that we look into every single question in great detail.",
    "Our company was founded many years ago with a simple vision in mind.",
    "In today's busy world, we know how important it is to get clear answers.",
)

GREETING = re.compile(r"^[\W_]*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening))\b", re.IGNORECASE)
# A capitalised word straight after the greeting word ("Hi Priya", "Dear Customer").
GREETED_WORD = re.compile(r"^[\W_]*(?i:hi|hello|hey|dear)[ ,]+([A-Z][a-z]+)\b")
GENERIC_ADDRESSEES = frozenset({"there", "customer", "team", "all", "friend"})

COURTESY = re.compile(
    r"\bthank(?:s| you)\b|\bhappy to help\b|\bglad to help\b|\bkind regards\b|\bbest wishes\b"
    r"|\bhave a (?:lovely|great|nice|good) day\b|\bsorry\b|\bapologi[sz]e\b",
    re.IGNORECASE,
)
RUDE = re.compile(
    r"\bthat's all\b|\bread the policy\b|\bnext time\b|\bnothing else to add\b|\bas stated\b|\bobviously\b"
    r"|\bnot (?:our|my) problem\b|\bdeal with it\b|\bfigure it out\b|\bwhatever\b",
    re.IGNORECASE,
)
FILLER_MARKERS = re.compile(
    r"\bas you (?:may|might) know\b|\bstrive\b|\bat the end of the day\b|\btake this opportunity\b"
    r"|\bworth (?:mentioning|noting)\b|\brest assured\b|\bwas founded\b|\bin today's\b"
    r"|\bgoes without saying\b|\bneedless to say\b",
    re.IGNORECASE,
)
