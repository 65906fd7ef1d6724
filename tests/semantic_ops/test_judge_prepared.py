"""Replayed litellm preparation: the provider receives what litellm's whole path sends, errors included."""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from semantic_ops.judges.base import JudgeRequest, Outcome
from semantic_ops.judges.litellm import LiteLLMJudge
from semantic_ops.judges.prepared import PreparedCalls
from tests.fake_provider import FakeProvider

MODEL = "openai/stand-in"
SYSTEM = "You judge whether a text satisfies a criterion. Answer with exactly one word: true or false."


def request(text: str, *, model: str = MODEL, max_tokens: int | None = 5, temperature: float | None = 0.0) -> JudgeRequest:
    return JudgeRequest(
        model=model,
        messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Criterion: eco-friendly\nText: {text}"}),
        temperature=temperature,
        max_tokens=max_tokens,
    )


@pytest.fixture()
def make_judge(make_judge: Callable[..., LiteLLMJudge]) -> Callable[..., LiteLLMJudge]:
    """Judges that retry without waiting long."""
    return lambda **kwargs: make_judge(**{"backoff": 0.01, **kwargs})


def sent(provider: FakeProvider) -> list[tuple[str, list[tuple[str, str]], str]]:
    """Path, headers in order (Host aside: the port is the same) and raw JSON body of each request received."""
    return [(r["path"], [(k, v) for k, v in r["headers"].items()], json.dumps(r["body"])) for r in provider.requests]


def one_by_one(judge: LiteLLMJudge, requests: list[JudgeRequest]) -> list[Outcome]:
    return [o for r in requests for o in judge.judge([r], threading.Event())]


def attempts(outcomes: list[Outcome]) -> list[list[tuple[Any, ...]]]:
    """Every attempt's visible fields, latency aside."""
    return [
        [(a.number, a.text, a.error, a.prompt_tokens, a.completion_tokens, a.cost, a.status, a.throttled) for a in o.attempts] for o in outcomes
    ]


@pytest.mark.parametrize(
    "shape",
    [
        {"model": MODEL, "max_tokens": 5, "temperature": 0.0},
        {"model": MODEL, "max_tokens": None, "temperature": None},
        {"model": "openai/gpt-4o-mini", "max_tokens": 16, "temperature": 0.0},  # a model litellm knows and prices
    ],
)
def test_replayed_calls_send_what_litellms_whole_path_sends(
    make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider, shape: dict[str, Any]
) -> None:
    requests = [request(text, **shape) for text in ("bamboo straw", "plastic fork", "recycled paper", "steel pan")]
    whole = make_judge(replay=False)
    expected = one_by_one(whole, requests)
    expected_sent = sent(provider)
    provider.reset()

    replaying = make_judge()
    got = one_by_one(replaying, requests)
    assert replaying._prepared is not None and replaying._prepared.replays == len(requests) - 1  # the first records
    assert sent(provider) == expected_sent
    assert [r["body"]["messages"][1]["content"].split("Text: ")[1] for r in provider.requests] == [
        "bamboo straw",
        "plastic fork",
        "recycled paper",
        "steel pan",
    ]
    assert attempts(got) == attempts(expected)
    assert [o.text for o in got] == ["true", "false", "true", "false"]


@pytest.mark.parametrize("status", [500, 404, 429, 400])
def test_replayed_calls_fail_as_litellms_whole_path_fails(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider, status: int) -> None:
    outcomes: dict[bool, list[Outcome]] = {}
    for replay in (False, True):
        provider.reset()
        judge = make_judge(replay=replay, num_retries=1)
        assert judge.judge([request("warm")], threading.Event())[0].text == "false"  # records, when replaying
        provider.behaviour.fail_first = 10**9
        provider.behaviour.fail_status = status
        provider.behaviour.retry_after = 0.05 if status == 429 else None
        outcomes[replay] = judge.judge([request("bamboo")], threading.Event())
        tries = len(outcomes[replay][0].attempts)
        assert tries == (1 if status in (400, 404) else 2)  # those two are not retried
        assert (judge._prepared.replays if judge._prepared else 0) == (tries if replay else 0)
    assert attempts(outcomes[True]) == attempts(outcomes[False])
    last = outcomes[True][0].attempts[-1]
    assert last.status == status and last.error is not None and last.text is None
    assert last.throttled == (status == 429)


def test_a_timeout_is_mapped_as_litellm_maps_it(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    judge = make_judge(timeout=0.3, num_retries=1)
    assert judge.judge([request("warm")], threading.Event())[0].error is None
    provider.behaviour.delay = 1.0
    [outcome] = judge.judge([request("bamboo")], threading.Event())
    assert judge._prepared is not None and judge._prepared.replays == 2
    assert [a.number for a in outcome.attempts] == [1, 2]
    assert all(a.error is not None and a.error.startswith("Timeout") for a in outcome.attempts)


def test_a_changed_litellm_setting_is_prepared_again(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    litellm = importlib.import_module("litellm")
    judge = make_judge()
    one_by_one(judge, [request("a"), request("b")])
    assert judge._prepared is not None and judge._prepared.replays == 1
    saved = litellm.headers
    litellm.headers = {"X-Extra": "set after start-up"}
    try:
        one_by_one(judge, [request("c"), request("d"), request("e")])
    finally:
        litellm.headers = saved
    # "c" is prepared again under the new setting. litellm adds its own headers to litellm.headers
    # while preparing it, which is a change too: "d" is prepared again, "e" replayed.
    assert judge._prepared.replays == 2
    extra = [{k.lower(): v for k, v in r["headers"].items()}.get("x-extra") for r in provider.requests]
    assert extra == [None, None, "set after start-up", "set after start-up", "set after start-up"]
    assert sent(provider)[-1][1] == sent(provider)[-2][1]


def test_litellm_callbacks_turn_replay_off(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    litellm = importlib.import_module("litellm")
    judge = make_judge()
    one_by_one(judge, [request("a"), request("b")])
    assert judge._prepared is not None and judge._prepared.replays == 1
    seen: list[Any] = []

    def callback(kwargs: Any, response: Any, start: Any, end: Any) -> None:
        seen.append(response)

    litellm.success_callback.append(callback)
    try:
        [outcome] = judge.judge([request("c")], threading.Event())
    finally:
        litellm.success_callback.remove(callback)
    assert outcome.text == "false" and judge._prepared.replays == 1


def test_only_plain_openai_chat_messages_are_replayed() -> None:
    prepared = PreparedCalls(importlib.import_module("litellm"))
    settings = prepared.settings()
    assert settings is not None
    plain = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert prepared.key("openai/m", plain, (), settings) is not None
    assert prepared.key("openai/m", plain, (), None) is None
    assert prepared.key("anthropic/claude", plain, (), settings) is None
    assert prepared.key("gpt-4o-mini", plain, (), settings) is None  # litellm resolves the provider: not replayed
    assert prepared.key("openai/m", [{"role": "user", "content": [{"type": "text", "text": "u"}]}], (), settings) is None
    assert prepared.key("openai/m", [{"role": "user", "content": "u", "name": "n"}], (), settings) is None
    assert prepared.key("openai/m", [{"role": "tool", "content": "u"}], (), settings) is None
    assert prepared.key("openai/m", plain, (1,), settings) != prepared.key("openai/m", plain, (2,), settings)


def test_litellm_settings_and_environment_are_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = importlib.import_module("litellm")
    prepared = PreparedCalls(litellm)
    before = prepared.settings()
    monkeypatch.setenv("OPENAI_ORGANIZATION", "org-elsewhere")
    assert prepared.settings() != before
    monkeypatch.setattr(litellm, "drop_params", True)
    assert prepared.settings() != before
    monkeypatch.setattr(litellm, "cache", object())
    assert prepared.settings() is None


def test_a_replayed_calls_empty_usage_is_litellms_own_and_its_alone() -> None:
    litellm = importlib.import_module("litellm")
    prepared = PreparedCalls(litellm)
    first, second = prepared._empty_usage(), prepared._empty_usage()
    assert first == litellm.Usage() and first is not second
    first.prompt_tokens = 7
    assert second.prompt_tokens == 0 and prepared._empty_usage() == litellm.Usage()
