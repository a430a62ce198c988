"""The settings of the serving loop (``rlhf serve``, ``rlhf feedback``, ``rlhf monitor``): the served model,
its Ray Serve deployment, HTTP address, request limits, API keys, the feedback store, guardrail checks and the
implicit-signal thresholds. Torch-free, so ``--help`` and config validation stay fast; the config models in
:mod:`rlhf.configs.serve` compose these sections.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import StrictModel

__all__ = [
    "AuthSettings",
    "DeploymentSettings",
    "GuardSettings",
    "HTTPSettings",
    "LimitSettings",
    "ServedModel",
    "SignalSettings",
    "StoreSettings",
]


class ServedModel(StrictModel):
    """The checkpoint behind the API and how replies are sampled by default."""

    path: str = Field("runs/quickstart", description="model folder, stage folder (its model/), .gguf file, hub id, "
                                                     "or a pipeline's run root (its last round's best policy)")
    name: str = Field("rlhf-policy", pattern=r"^[A-Za-z0-9_.:/-]+$",
                      description="the model id clients send and /v1/models lists")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    engine: Literal["transformers"] = Field(
        "transformers", description="generation engine: transformers (CPU or one GPU per replica)")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="default sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="default nucleus sampling (1: off)")
    max_tokens: int = Field(96, ge=1, description="default longest reply in tokens")
    system_prompt: str | None = Field(None, description="a system message put before every conversation "
                                                        "that has none")


class DeploymentSettings(StrictModel):
    """Ray Serve replicas of the chat deployment."""

    num_replicas: int = Field(1, ge=1, description="fixed replica count (ignored when autoscaling is on)")
    autoscaling: bool = Field(False, description="let Ray Serve scale between min_replicas and max_replicas")
    min_replicas: int = Field(1, ge=0, description="autoscaling: fewest replicas")
    max_replicas: int = Field(2, ge=1, description="autoscaling: most replicas")
    target_ongoing_requests: float = Field(2.0, gt=0, description="autoscaling: requests in flight per replica")
    max_ongoing_requests: int = Field(8, ge=1, description="requests one replica takes at once; more wait")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (0 on CPU machines)")
    torch_threads: int = Field(0, ge=0, description="torch threads per replica (0: torch's default)")

    @model_validator(mode="after")
    def _range(self) -> DeploymentSettings:
        if self.autoscaling and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas}); "
                             "lower min_replicas")
        return self


class HTTPSettings(StrictModel):
    """Where the API listens (Ray Serve's proxy)."""

    host: str = Field("127.0.0.1", description="bind address (0.0.0.0 to serve other machines)")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")


class LimitSettings(StrictModel):
    """Bounds every request is checked against before any work is done."""

    max_body_bytes: int = Field(65536, ge=1024, description="largest request body")
    max_prompt_tokens: int = Field(1024, ge=8, description="longest conversation in tokens (template included)")
    max_tokens: int = Field(256, ge=1, description="the most reply tokens a request may ask for")
    max_messages: int = Field(32, ge=1, description="the most messages in one request")
    requests_per_minute: int = Field(120, ge=1, description="per API key and replica")
    max_comment_chars: int = Field(2000, ge=1, description="longest feedback comment or human reply")


class AuthSettings(StrictModel):
    """API keys: chat keys may chat and send feedback; the admin key may also export and read the store."""

    chat_keys: list[str] = Field(default_factory=lambda: ["chat-demo-key"], min_length=1,
                                 description="keys accepted on /v1/chat/completions and /v1/feedback "
                                             "(pass real ones as overrides, e.g. auth.chat_keys=[$KEY])")
    admin_key: str = Field("admin-demo-key", min_length=8, description="key of /v1/admin/* (export)")

    @model_validator(mode="after")
    def _distinct(self) -> AuthSettings:
        if self.admin_key in self.chat_keys:
            raise ValueError("auth.admin_key is also a chat key; give the admin its own key")
        if any(len(k) < 8 for k in self.chat_keys):
            raise ValueError("every auth.chat_keys entry needs at least 8 characters")
        return self


class StoreSettings(StrictModel):
    """Where replies and feedback are kept."""

    url: str = Field("sqlite:///runs/serve/feedback.db",
                     description="SQLAlchemy URL: sqlite:///PATH (default) or postgresql+psycopg://USER@HOST/DB")
    scrubber: str = Field("default", description="PII scrubber run on every text before it is stored "
                                                 "('default', or module:function; 'none' is refused)")

    @model_validator(mode="after")
    def _scrubbed(self) -> StoreSettings:
        if self.scrubber.strip() == "none":
            raise ValueError("store.scrubber=none would store personal data; name 'default' or a module:function")
        if not self.url.startswith(("sqlite:///", "postgresql")):
            raise ValueError(f"store.url {self.url!r} is neither sqlite:///PATH nor postgresql+psycopg://...")
        return self


class GuardSettings(StrictModel):
    """Pluggable checks: each ``module:function`` takes a text and returns the flag names it raises."""

    prompt_checks: list[str] = Field(default_factory=lambda: ["rlhf.serving.guards:prompt_injection"],
                                     description="checks run on the last user message")
    reply_checks: list[str] = Field(default_factory=lambda: ["rlhf.serving.guards:pii_in_reply"],
                                    description="checks run on every reply")
    block_flags: list[str] = Field(default_factory=list,
                                   description="flags that refuse the request with 400 instead of only counting")


class SignalSettings(StrictModel):
    """Thresholds of the implicit signals the server derives from conversations."""

    rephrase_similarity: float = Field(0.6, gt=0, le=1, description="share of an earlier message's content words "
                                       "that a user's new message repeats, from which it re-asks it (a rephrase)")
    abandon_after_s: float = Field(1800.0, gt=0, description="a conversation whose last reply got thumbs-down or "
                                                             "a rephrase and no message since is abandoned after this")
    categorizer: str = Field("rlhf.world.prompts:intent_of",
                             description="module:function naming a conversation's category from its first user "
                                         "message (monitoring groups figures by it)")
