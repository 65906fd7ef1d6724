"""LiteLLMJudge against the stand-in provider over loopback, through litellm's real HTTP path."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from semantic_ops.judges.base import JudgeRequest
from semantic_ops.judges.litellm import CANCELLED, LiteLLMJudge, _pure_preparation, _quiet_logging_class
from tests.fake_provider import FakeProvider

MODEL = "openai/stand-in"  # litellm has no price for it


def request(text: str, criterion: str = "eco-friendly", model: str = MODEL) -> JudgeRequest:
    return JudgeRequest(model=model, messages=({"role": "user", "content": f"Criterion: {criterion}\nText: {text}"},))




def test_answers_with_tokens_and_no_price_for_an_unknown_model(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    judge = make_judge()
    outcomes = judge.judge([request("bamboo toothbrush"), request("plastic fork")], threading.Event())
    assert [o.text for o in outcomes] == ["true", "false"]
    assert [o.error for o in outcomes] == [None, None]
    first = outcomes[0].attempts
    assert len(first) == 1 and first[0].number == 1 and first[0].status == 200 and not first[0].throttled
    assert first[0].prompt_tokens == 5 and first[0].completion_tokens == 1  # the stand-in counts words
    assert first[0].cost is None and first[0].latency_ms > 0
    assert provider.attempts == 2


def test_cost_at_the_models_list_price(make_judge: Callable[..., LiteLLMJudge]) -> None:
    litellm = importlib.import_module("litellm")
    judge = make_judge()
    [outcome] = judge.judge([request("bamboo", model="openai/gpt-4o-mini")], threading.Event())
    attempt = outcome.attempts[-1]
    assert attempt.text == "true"
    prompt_cost, completion_cost = litellm.cost_per_token(model="openai/gpt-4o-mini", prompt_tokens=attempt.prompt_tokens,
                                                          completion_tokens=attempt.completion_tokens)
    assert attempt.cost == pytest.approx(prompt_cost + completion_cost) and attempt.cost > 0


def test_a_500_is_retried_and_both_attempts_are_kept(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.fail_first = 1
    provider.behaviour.fail_status = 500
    judge = make_judge(backoff=0.01)
    [outcome] = judge.judge([request("bamboo")], threading.Event())
    assert [a.number for a in outcome.attempts] == [1, 2]
    assert [a.status for a in outcome.attempts] == [500, 200]
    assert outcome.attempts[0].error is not None and "InternalServerError" in outcome.attempts[0].error
    assert outcome.attempts[0].text is None and not outcome.attempts[0].throttled
    assert outcome.text == "true" and outcome.error is None
    assert provider.attempts == 2  # no retries hidden inside litellm or the openai SDK


def test_retry_after_is_honoured(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.fail_first = 1
    provider.behaviour.fail_status = 429
    provider.behaviour.retry_after = 1
    judge = make_judge(backoff=0.01)
    [outcome] = judge.judge([request("bamboo")], threading.Event())
    assert [(a.number, a.status, a.throttled) for a in outcome.attempts] == [(1, 429, True), (2, 200, False)]
    assert outcome.text == "true"
    first, second = (r["t"] for r in provider.requests)
    assert second - first >= 1.0


def test_a_404_fails_at_once(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.fail_first = 10**9
    provider.behaviour.fail_status = 404
    judge = make_judge(backoff=0.01)
    [outcome] = judge.judge([request("bamboo")], threading.Event())
    assert len(outcome.attempts) == 1 and outcome.attempts[0].status == 404
    assert outcome.error is not None and outcome.error.startswith("NotFoundError")
    assert outcome.text is None
    assert provider.attempts == 1


def test_garbage_comes_back_as_text(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.garbage = True
    judge = make_judge()
    [outcome] = judge.judge([request("bamboo")], threading.Event())
    assert outcome.text == "I am not sure, it depends." and outcome.error is None  # parsing is not the judge's job


def test_random_failures_are_retried_away(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.fail_rate = 0.3
    provider.behaviour.fail_status = 503
    judge = make_judge(backoff=0.005)
    assert judge.num_retries == 8
    outcomes = judge.judge([request(f"bamboo {i}") for i in range(60)], threading.Event())
    assert all(o.text == "true" and o.error is None for o in outcomes)
    attempts = sum(len(o.attempts) for o in outcomes)
    assert attempts == provider.attempts and attempts > 60
    for o in outcomes:
        assert [a.number for a in o.attempts] == list(range(1, len(o.attempts) + 1))
        assert all(a.status == 503 for a in o.attempts[:-1])


def test_timeouts_are_retried(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.delay = 1.0
    judge = make_judge(timeout=0.2, num_retries=1, backoff=0.01)
    [outcome] = judge.judge([request("bamboo")], threading.Event())
    assert [a.number for a in outcome.attempts] == [1, 2]
    assert all(a.error is not None and a.error.startswith("Timeout") for a in outcome.attempts)


def test_an_attempt_that_outlives_litellms_timeout_is_cut_short_and_retried(
    make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    litellm_judge = importlib.import_module("semantic_ops.judges.litellm")
    monkeypatch.setattr(litellm_judge, "BACKSTOP", 0.3)
    monkeypatch.setattr(litellm_judge, "_SWEEP", 0.05)
    judge = make_judge(timeout=0.2, num_retries=1, backoff=0.01)
    hung: list[float] = []

    async def hang(*args: Any, **kwargs: Any) -> Any:  # stuck somewhere litellm's own timeout does not reach
        hung.append(time.monotonic())
        await asyncio.sleep(60)

    monkeypatch.setattr(judge, "_complete", hang)
    started = time.monotonic()
    outcomes = judge.judge([request("bamboo"), request("plastic fork")], threading.Event())
    assert time.monotonic() - started < 3 and len(hung) == 4
    for outcome in outcomes:
        assert [a.number for a in outcome.attempts] == [1, 2]
        assert all(a.error == "TimeoutError: no answer within 0 s" and 400 <= (a.latency_ms or 0) < 1500 for a in outcome.attempts)


def test_cancel_cuts_short_an_attempt_past_the_backstop_too(
    make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    litellm_judge = importlib.import_module("semantic_ops.judges.litellm")
    monkeypatch.setattr(litellm_judge, "BACKSTOP", 60.0)
    judge = make_judge(timeout=0.2, num_retries=3, backoff=0.01)

    async def hang(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(60)

    monkeypatch.setattr(judge, "_complete", hang)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    [outcome] = judge.judge([request("bamboo")], cancel)
    assert time.monotonic() - started < 2
    assert [a.error for a in outcome.attempts] == [CANCELLED]


def test_cancel_returns_what_was_paid_for(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.delay = 0.4
    judge = make_judge(max_concurrency=4)
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def cancel_mid_second_wave() -> None:
        time.sleep(0.6)  # the first 4 answered at ~0.4 s; the next 4 are in flight until ~0.8 s
        cancelled_at.append(time.time())
        cancel.set()

    threading.Thread(target=cancel_mid_second_wave).start()
    outcomes = judge.judge([request(f"bamboo {i}") for i in range(12)], cancel)
    returned_at = time.time()

    assert returned_at - cancelled_at[0] < 0.2
    answered = [o for o in outcomes if o.error is None]
    cancelled = [o for o in outcomes if o.error == CANCELLED]
    assert len(answered) == 4 and all(o.text == "true" for o in answered)
    assert len(cancelled) == 8 and len(answered) + len(cancelled) == len(outcomes)
    for o in cancelled:
        assert len(o.attempts) == 1 and o.attempts[0].number == 1 and o.text is None
    # The 4 cancelled in flight had run for a while; the 4 never started had not.
    assert sorted(o.attempts[0].latency_ms > 100 for o in cancelled) == [False] * 4 + [True] * 4
    time.sleep(0.5)
    assert len(provider.requests) == 8
    assert all(r["t"] < cancelled_at[0] for r in provider.requests)


def test_cancel_before_the_call_sends_nothing(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    judge = make_judge()
    cancel = threading.Event()
    cancel.set()
    outcomes = judge.judge([request("bamboo"), request("fork")], cancel)
    assert [o.error for o in outcomes] == [CANCELLED, CANCELLED]
    assert provider.attempts == 0


def test_progress_is_reported_from_the_event_loop(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.delay = 0.1
    judge = make_judge(max_concurrency=2)
    calls: list[tuple[float, int, str]] = []

    def progress(done: int) -> None:
        calls.append((time.monotonic(), done, threading.current_thread().name))

    outcomes = judge.judge([request(f"bamboo {i}") for i in range(24)], threading.Event(), progress)
    assert all(o.error is None for o in outcomes)
    counts = [c[1] for c in calls]
    assert counts[-1] == 24 and 3 <= len(calls) <= 5  # ~1.2 s: two or three reports, then the final one
    assert counts == sorted(counts) and 0 < counts[0] < 24
    assert {c[2] for c in calls} == {"meansql-judge"}
    gaps = [b[0] - a[0] for a, b in zip(calls[:-2], calls[1:-1])]
    assert all(g >= 0.45 for g in gaps)


def test_a_failing_progress_callback_does_not_lose_answers(make_judge: Callable[..., LiteLLMJudge]) -> None:
    def progress(done: int) -> None:
        raise RuntimeError("boom")

    judge = make_judge()
    outcomes = judge.judge([request("bamboo")], threading.Event(), progress)
    assert outcomes[0].text == "true"


def test_adaptive_concurrency_settles_near_the_providers_limit(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    provider.behaviour.max_inflight = 8
    provider.behaviour.retry_after = 1
    provider.behaviour.delay = 0.05
    judge = make_judge(max_concurrency=32)
    assert judge.current_concurrency == 32

    first = judge.judge([request(f"bamboo a{i}") for i in range(60)], threading.Event())
    assert all(o.text == "true" and o.error is None for o in first)
    assert any(a.throttled and a.status == 429 for o in first for a in o.attempts)
    # Near 8: our own count runs a little ahead of the provider's (a call is "in flight" for us
    # while litellm still prepares it), so on a busy machine the limit can sit at 9-11.
    assert 1 <= judge.current_concurrency <= 12

    provider.max_seen_inflight = 0  # the first round's burst is over; count the steady state
    started = time.monotonic()
    second = judge.judge([request(f"bamboo b{i}") for i in range(60)], threading.Event())
    assert all(o.text == "true" and o.error is None for o in second)
    assert provider.max_seen_inflight <= 10
    assert time.monotonic() - started < 1.5 * 60 / 8 * 0.05 + 2.0  # plus at most a Retry-After or two


def test_litellms_logging_hooks_we_switch_off_still_exist() -> None:
    importlib.import_module("litellm")
    base = importlib.import_module("litellm.litellm_core_utils.litellm_logging").Logging
    quiet = _quiet_logging_class()
    for name in ("response_cost_calculator", "claim_async_success_log", "async_success_handler", "success_handler",
                 "handle_sync_success_callbacks_for_async_calls", "failure_handler", "async_failure_handler",
                 "pre_call", "post_call"):
        assert hasattr(base, name), name
        assert getattr(quiet, name) is not getattr(base, name), name


def test_warm_up_sends_nothing(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    judge = make_judge()
    judge.warm_up(MODEL)
    assert provider.attempts == 0
    [outcome] = judge.judge([request("bamboo")], threading.Event())
    assert outcome.text == "true"



def test_warm_up_reaches_no_provider(make_judge: Callable[..., LiteLLMJudge], provider: FakeProvider) -> None:
    judge = make_judge()
    judge.warm_up(MODEL)
    assert provider.requests == []
    [outcome] = judge.judge([request("bamboo toothbrush")], threading.Event())
    assert outcome.text == "true" and len(provider.requests) == 1


def _prepared(model: str) -> Any:
    """What litellm hands its executor: partial(context.run, partial(completion, model=...))."""
    def completion(**kwargs: Any) -> None:
        return None

    return functools.partial(contextvars.copy_context().run, functools.partial(completion, model=model))


def test_request_preparation_runs_inline_only_for_openai_style_models() -> None:
    assert _pure_preparation(_prepared("openai/stand-in"))
    assert _pure_preparation(_prepared("gpt-4o-mini"))
    assert not _pure_preparation(_prepared("bedrock/anthropic.claude-3"))
    assert not _pure_preparation(_prepared("vertex_ai/gemini-pro"))
    assert not _pure_preparation(functools.partial(print, "not litellm"))


def test_cookie_jar_skips_only_responses_that_set_no_cookie(make_judge: Callable[..., LiteLLMJudge]) -> None:
    import httpx

    make_judge()._lib()  # installs the skip
    assert getattr(httpx.Cookies.extract_cookies, "meansql_skip", False)
    request_ = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    jar = httpx.Cookies()
    jar.extract_cookies(httpx.Response(200, headers={"content-type": "application/json"}, request=request_))
    assert dict(jar) == {}
    jar.extract_cookies(httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"}, request=request_))
    jar.extract_cookies(httpx.Response(200, headers=[(b"SET-COOKIE", b"other=1; Path=/")], request=request_))
    assert dict(jar) == {"session": "abc", "other": "1"}
    sent = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    jar.set_cookie_header(sent)
    assert sent.headers["cookie"] in ("session=abc; other=1", "other=1; session=abc")


def test_httpx_parses_each_url_once_and_the_same_way(make_judge: Callable[..., LiteLLMJudge]) -> None:
    import httpx

    make_judge()._lib()  # installs the memo
    urls = importlib.import_module("httpx._urls")
    models = importlib.import_module("httpx._models")
    assert getattr(urls.urlparse, "meansql_memo", False)  # httpx still parses through the name we replace
    original = importlib.import_module("httpx._urlparse").urlparse
    for text in (
        "http://127.0.0.1:9/v1/chat/completions",
        "https://api.example.com:443/v1/chat/completions?x=1#f",
        "http://[::1]:8080/a%20b/c d",
    ):
        assert urls.urlparse(text) is urls.urlparse(text)  # kept
        assert urls.urlparse(text) == original(text)
        assert str(httpx.URL(text)) == str(original(text))
    assert httpx.URL("http://h/p", params={"a": "1"}).query == b"a=1"  # keyword arguments take httpx's own path
    for _ in range(2):  # an invalid URL raises every time
        with pytest.raises(httpx.InvalidURL):
            httpx.URL("http://host:port/")
    answer = httpx.Response(200, headers={"content-type": "application/json; charset=latin-1"}, content=b"{}")
    assert answer.charset_encoding == "latin-1" and models._parse_content_type_charset("text/plain") is None


def test_litellms_http_timing_runs_only_when_a_service_callback_reads_it(make_judge: Callable[..., LiteLLMJudge]) -> None:
    lib = importlib.import_module("litellm")
    judge = make_judge()
    judge._lib()  # installs the skip
    handler = importlib.import_module("litellm.llms.custom_httpx.http_handler").AsyncHTTPHandler
    assert getattr(handler.post, "meansql_untimed", False)
    service = importlib.import_module("litellm.litellm_core_utils.logging_utils")._get_service_logger()
    before = service.mock_testing_async_success_hook
    service.mock_testing = True  # litellm counts the service events it would emit
    try:
        assert judge.judge([request("bamboo toothbrush")], threading.Event())[0].text == "true"
        lib.service_callback.append("meansql-test")
        assert judge.judge([request("plastic fork")], threading.Event())[0].text == "false"
        deadline = time.monotonic() + 5
        while service.mock_testing_async_success_hook == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.mock_testing_async_success_hook == before + 1  # the second call only
    finally:
        service.mock_testing = False
        lib.service_callback.remove("meansql-test")
