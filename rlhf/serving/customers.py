"""Simulated customers for dry runs, tests and the load benchmark: demo-world customers who chat with the served
assistant through the ``openai`` client (exactly as a real client would), judge every reply with a rubric
(``module:function`` of prompt and reply, the demo world's gold rubric by default), and act on it: a good reply
gets a thumbs-up and ends the conversation; a bad one gets a thumbs-down and then, by the customer's temper,
a rephrased question, a request for a human (which the server records as an implicit ``ask_human``), an
explicit escalation, or silence (an abandoned conversation).

Every feedback event a customer sends carries an ``event_id``; :class:`CustomerLog` keeps what was sent so a
test can check the store holds exactly that.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

import httpx

from rlhf.utils.callables import load_callable
from rlhf.world.prompts import generate_prompts

__all__ = ["CustomerLog", "Turn", "simulate_customers"]

ACTIONS: tuple[str, ...] = ("rephrase", "ask_human", "escalate", "abandon")
HUMAN_PLEASE = "Can I talk to a human agent, please?"


@dataclass
class Turn:
    """One reply a customer got and what they made of it."""

    conversation: int
    user: str
    question: str
    prompt: str
    reply_id: str
    reply: str
    score: float
    action: str  # thumbs_up, or thumbs_down followed by one of ACTIONS (or "last" when the turns ran out)


@dataclass
class CustomerLog:
    """What the simulated customers did: every turn and every feedback event id sent."""

    turns: list[Turn] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (event_id, kind) of each POST /v1/feedback
    retries: int = 0  # feedback POSTs repeated with the same event_id (must not be stored twice)

    def implicit_expected(self) -> dict[str, int]:
        """The implicit signals the server should have derived from these conversations."""
        out = {"rephrase": 0, "ask_human": 0}
        for turn in self.turns:
            if turn.action in out:
                out[turn.action] += 1
        return out


LEADS: tuple[str, ...] = ("Sorry, that does not answer it.", "That is not what I asked.", "Let me ask again.")


def _rephrase(question: str, previous: str, rng: random.Random) -> str:
    """The question again with a lead of annoyance, never the very text the customer sent last."""
    lead = rng.choice([lead for lead in LEADS if not previous.startswith(lead)])
    return f"{lead} {question}"


def simulate_customers(base_url: str, api_key: str, conversations: int, seed: int = 0, *, model: str | None = None,
                       rubric: str = "rlhf.world.rubric:gold_rubric", satisfied: float = 0.6, max_turns: int = 3,
                       max_tokens: int = 64, temperature: float | None = None, retry_share: float = 0.2,
                       prompt_seed: int | None = None) -> CustomerLog:
    """Hold ``conversations`` conversations with the API at ``base_url`` (without ``/v1``); returns the log.

    A reply scoring at least ``satisfied`` on the rubric pleases the customer. ``retry_share`` of the feedback
    POSTs are sent twice with the same ``event_id`` (a client retry)."""
    from openai import OpenAI

    rng = random.Random(seed)
    judge = load_callable(rubric)
    client = OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=600)
    served = model or client.models.list().data[0].id
    log = CustomerLog()
    prompts = generate_prompts(conversations, seed if prompt_seed is None else prompt_seed)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as http:

        def feedback(reply_id: str, kind: str) -> None:
            event_id = uuid.uuid4().hex
            body = {"reply_id": reply_id, "event_id": event_id}
            body.update({"rating": "up"} if kind == "thumbs_up" else {"rating": "down"} if kind == "thumbs_down"
                        else {"escalate": True})
            for _ in range(2 if rng.random() < retry_share else 1):
                response = http.post("/v1/feedback", json=body)
                response.raise_for_status()
            log.retries += 0 if response.json()["duplicates"] == 0 else 1
            log.events.append((f"{event_id}:{kind}", kind))

        for number, prompt in enumerate(prompts):
            user = f"customer-{seed}-{number}"
            messages: list[dict[str, str]] = []
            question = prompt.text
            for turn in range(max_turns):
                messages.append({"role": "user", "content": question})
                extra = {} if temperature is None else {"temperature": temperature}
                completion = client.chat.completions.create(model=served, messages=messages, user=user,
                                                            max_tokens=max_tokens, **extra)
                reply = completion.choices[0].message.content or ""
                messages.append({"role": "assistant", "content": reply})
                score = float(judge(prompt.text, reply))
                if score >= satisfied:
                    feedback(completion.id, "thumbs_up")
                    log.turns.append(Turn(number, user, question, prompt.text, completion.id, reply, score,
                                          "thumbs_up"))
                    break
                feedback(completion.id, "thumbs_down")
                if question == HUMAN_PLEASE:  # no human came: escalate with the button
                    action = "escalate"
                else:
                    action = rng.choice(ACTIONS) if turn < max_turns - 1 else "last"
                log.turns.append(Turn(number, user, question, prompt.text, completion.id, reply, score, action))
                if action == "rephrase":
                    question = _rephrase(prompt.text, question, rng)
                elif action == "ask_human":
                    question = HUMAN_PLEASE
                elif action == "escalate":
                    feedback(completion.id, "escalate")
                    break
                else:
                    break
    return log
