"""The judge tests' stand-in provider, reset before each test, and a factory of judges closed after it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from semantic_ops.judges.base import JudgeRequest
from semantic_ops.judges.litellm import LiteLLMJudge
from tests.fake_provider import FakeProvider


@pytest.fixture(scope="module")
def stand_in() -> Iterator[FakeProvider]:
    # A listen queue long enough for a burst of new connections (socketserver's default of 5
    # resets some, which the judge would retry, muddying attempt counts).
    p = FakeProvider(backlog=256, nodelay=True).start()
    # litellm imports half of itself on the first call; pay that here, not inside a timed test.
    warm = LiteLLMJudge(api_base=p.url, api_key="sk-test")
    warm.judge([JudgeRequest(model="openai/stand-in", messages=({"role": "user", "content": "warm-up"},))], threading.Event())
    warm.close()
    yield p
    p.stop()


@pytest.fixture()
def provider(stand_in: FakeProvider) -> FakeProvider:
    # Answers a previous test cancelled may still be sleeping in the stand-in; let them drain.
    deadline = time.monotonic() + 5
    while stand_in.inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    stand_in.reset()
    return stand_in


@pytest.fixture()
def make_judge(provider: FakeProvider) -> Iterator[Callable[..., LiteLLMJudge]]:
    judges: list[LiteLLMJudge] = []

    def make(**kwargs: Any) -> LiteLLMJudge:
        judge = LiteLLMJudge(**{"api_base": provider.url, "api_key": "sk-test", **kwargs})
        judges.append(judge)
        return judge

    yield make
    for j in judges:
        j.close()
