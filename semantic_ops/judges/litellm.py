"""Model calls through litellm's async client, from one background event loop.

Calls run concurrently up to max_concurrency; 429, 5xx, timeouts and connection
errors are retried with exponential backoff that honours Retry-After (capped at
60 s). Our own per-call timeout replaces litellm's 6,000 s default.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from semantic_ops.judges.base import Attempt, JudgeRequest, Outcome

log = logging.getLogger(__name__)

RETRY_AFTER_CAP = 60.0


def _import_litellm() -> Any:
    # The cost map would otherwise be fetched from the internet on import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _retry_after(exc: BaseException) -> float | None:
    # litellm keeps the provider's headers on the exception; its .response is often a stub.
    candidates = (getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None),
                  getattr(getattr(exc, "response", None), "headers", None))
    value = next((h.get("retry-after") for h in candidates if h is not None and hasattr(h, "get")
                  and h.get("retry-after") is not None), None)
    if value is None:
        return None
    try:
        return min(float(value), RETRY_AFTER_CAP)
    except ValueError:
        return None


def _retryable(exc: BaseException) -> bool:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status == 429 or status >= 500 or status == 408
    name = type(exc).__name__
    return any(k in name for k in ("Timeout", "Connection", "RateLimit", "ServiceUnavailable", "InternalServer"))


class LiteLLMJudge:
    """Judge that sends OpenAI-style chat requests through litellm."""

    def __init__(
        self,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout: float = 30.0,
        num_retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.name = "litellm"
        self.api_base = api_base
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.timeout = min(timeout, 60.0)
        self.num_retries = num_retries
        self.backoff = backoff
        self._litellm: Any = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="meansql-judge", daemon=True)
        self._thread.start()
        self._sem: asyncio.Semaphore | None = None

    def _lib(self) -> Any:
        if self._litellm is None:
            self._litellm = _import_litellm()
        return self._litellm

    def warm_up(self) -> None:
        """Import litellm now rather than on the first query."""
        self._lib()

    def judge(self, requests: list[JudgeRequest], cancel: threading.Event,
              progress: Callable[[int], None] | None = None) -> list[Outcome]:
        lib = self._lib()
        fut = asyncio.run_coroutine_threadsafe(self._judge_all(lib, requests, cancel), self._loop)
        while True:
            try:
                outcomes = fut.result(timeout=0.05)
                if progress is not None:
                    progress(len(outcomes))
                return outcomes
            except TimeoutError:
                if cancel.is_set():
                    fut.cancel()
                    raise

    async def _judge_all(self, lib: Any, requests: list[JudgeRequest], cancel: threading.Event) -> list[Outcome]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return list(await asyncio.gather(*(self._judge_one(lib, r, cancel) for r in requests)))

    async def _judge_one(self, lib: Any, request: JudgeRequest, cancel: threading.Event) -> Outcome:
        outcome = Outcome()
        assert self._sem is not None
        for number in range(1, self.num_retries + 2):
            if cancel.is_set():
                outcome.attempts.append(Attempt(number, error="cancelled before the call"))
                return outcome
            started = time.perf_counter()
            async with self._sem:
                try:
                    response = await lib.acompletion(
                        model=request.model,
                        messages=list(request.messages),
                        api_base=self.api_base,
                        api_key=self.api_key,
                        timeout=self.timeout,
                        temperature=request.temperature,
                        max_tokens=request.max_tokens,
                        num_retries=0,
                    )
                except Exception as exc:
                    attempt = Attempt(number, error=f"{type(exc).__name__}: {exc}"[:2000],
                                      latency_ms=(time.perf_counter() - started) * 1000)
                    outcome.attempts.append(attempt)
                    if not _retryable(exc) or number > self.num_retries:
                        return outcome
                    wait = _retry_after(exc)
                    if wait is None:
                        wait = self.backoff * (2 ** (number - 1)) * (0.5 + random.random())
                    await asyncio.sleep(wait)
                    continue
            outcome.attempts.append(self._success(lib, number, response, started))
            return outcome
        return outcome

    @staticmethod
    def _success(lib: Any, number: int, response: Any, started: float) -> Attempt:
        latency = (time.perf_counter() - started) * 1000
        text = None
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError):
            text = None
        usage = getattr(response, "usage", None)
        cost = None
        try:
            cost = float(lib.completion_cost(completion_response=response))
        except Exception:  # unknown models have no price; cost stays NULL
            cost = None
        return Attempt(
            number,
            text=text,
            error=None if text is not None else "empty answer",
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            cost=cost,
            latency_ms=latency,
        )

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
