"""Fixtures of the serving tests: a chat service over the tiny SFT policy and a fresh SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chat_engine(sft_policy: Path):
    """The tiny SFT policy loaded once for every in-process test of the API."""
    from rlhf.serving.chat import ChatEngine

    return ChatEngine.load(str(sft_policy), device="cpu")


@pytest.fixture
def make_service(tmp_path: Path, chat_engine, sft_policy: Path):
    """Build a :class:`~rlhf.serving.api.ChatService` with settings overridden per test (section -> dict)."""
    from rlhf.serving.api import ChatService
    from rlhf.serving.settings import (
        AuthSettings,
        GuardSettings,
        LimitSettings,
        ServedModel,
        SignalSettings,
        StoreSettings,
    )
    from rlhf.serving.store import FeedbackStore
    from rlhf.world.prompts import intent_of

    def build(**sections: dict):
        store = StoreSettings(url=f"sqlite:///{tmp_path / 'feedback.db'}", **sections.get("store", {}))
        return ChatService(
            model=ServedModel(path=str(sft_policy), **sections.get("model", {})),
            limits=LimitSettings(**sections.get("limits", {})), auth=AuthSettings(**sections.get("auth", {})),
            store=FeedbackStore(store.url, store.scrubber), guards=GuardSettings(**sections.get("guards", {})),
            signals=SignalSettings(**sections.get("signals", {})), engine=chat_engine, categorize=intent_of)

    return build


@pytest.fixture
def client(make_service):
    """A FastAPI test client over the default service (chat key ``chat-demo-key``, admin ``admin-demo-key``)."""
    from fastapi.testclient import TestClient

    from rlhf.serving.api import build_api

    service = make_service()
    with TestClient(build_api(service)) as test_client:
        test_client.service = service
        yield test_client


CHAT = {"Authorization": "Bearer chat-demo-key"}
ADMIN = {"Authorization": "Bearer admin-demo-key"}
