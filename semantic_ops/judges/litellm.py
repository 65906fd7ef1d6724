"""Model calls through litellm's async client, from one background event loop.

Calls run concurrently under an adaptive limit (limiter.py); 429, 408, 5xx,
timeouts and connection errors are retried with jittered exponential backoff
(capped at 4 s) that honours Retry-After (capped at 60 s). Our own per-call
timeout replaces litellm's 6,000 s default. A cancel stops new attempts at once,
cancels the requests in flight, and still returns what was already answered.
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
from semantic_ops.judges.limiter import AdaptiveLimiter

log = logging.getLogger(__name__)

RETRY_AFTER_CAP = 60.0
BACKOFF_CAP = 4.0
PROGRESS_EVERY = 0.5
CANCELLED = "cancelled"


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


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _retryable(exc: BaseException) -> bool:
    status = _status(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
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
        num_retries: int = 8,
        backoff: float = 0.25,
    ) -> None:
        self.name = "litellm"
        self.api_base = api_base
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.timeout = min(timeout, 60.0)
        self.num_retries = num_retries
        self.backoff = backoff
        self.limiter = AdaptiveLimiter(max_concurrency)
        self._litellm: Any = None
        self._import_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="meansql-judge", daemon=True)
        self._thread.start()

    @property
    def current_concurrency(self) -> int:
        """How many calls may be in flight now (drops on 429s, grows back)."""
        return self.limiter.current

    def _lib(self) -> Any:
        with self._import_lock:
            if self._litellm is None:
                self._litellm = _import_litellm()
            return self._litellm

    def warm_up(self, model: str | None = None) -> None:
        """Import litellm and take one call through its code path (answered locally), before the first query."""
        lib = self._lib()
        if model:
            try:
                fut = asyncio.run_coroutine_threadsafe(lib.acompletion(
                    model=model, messages=[{"role": "user", "content": "warm-up"}], mock_response="true",
                    api_base=self.api_base, api_key=self.api_key or "warm-up"), self._loop)
                fut.result(timeout=30)
            except Exception as exc:  # a warm-up that fails only costs the first query its time
                log.debug("model warm-up failed: %s", exc)

    def judge(self, requests: list[JudgeRequest], cancel: threading.Event,
              progress: Callable[[int], None] | None = None) -> list[Outcome]:
        """Answer every request; on cancel, return at once with the unfinished ones marked cancelled."""
        lib = self._lib()
        fut = asyncio.run_coroutine_threadsafe(self._judge_all(lib, requests, cancel, progress), self._loop)
        return fut.result()

    async def _judge_all(self, lib: Any, requests: list[JudgeRequest], cancel: threading.Event,
                         progress: Callable[[int], None] | None) -> list[Outcome]:
        outcomes = [Outcome() for _ in requests]
        tasks = [asyncio.ensure_future(self._judge_one(lib, r, o, cancel)) for r, o in zip(requests, outcomes)]
        pending: set[asyncio.Future[None]] = set(tasks)
        last_report = time.monotonic()
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.02)
            if cancel.is_set():
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
            if progress is not None and time.monotonic() - last_report >= PROGRESS_EVERY:
                last_report = time.monotonic()
                progress(len(tasks) - len(pending))
        for outcome in outcomes:
            if not outcome.attempts:
                outcome.attempts.append(Attempt(1, error=CANCELLED))
        if progress is not None:
            progress(sum(1 for o in outcomes if o.error != CANCELLED))
        return outcomes

    async def _judge_one(self, lib: Any, request: JudgeRequest, outcome: Outcome, cancel: threading.Event) -> None:
        number = 0
        try:
            for number in range(1, self.num_retries + 2):
                if cancel.is_set():
                    outcome.attempts.append(Attempt(number, error=CANCELLED))
                    return
                started_round = await self.limiter.acquire()
                started = time.perf_counter()
                throttled = False
                try:
                    response = await lib.acompletion(
                        model=request.model, messages=list(request.messages), api_base=self.api_base,
                        api_key=self.api_key, timeout=self.timeout, temperature=request.temperature,
                        max_tokens=request.max_tokens, num_retries=0,
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    wait = _retry_after(exc)
                    throttled = _status(exc) == 429 or wait is not None
                    outcome.attempts.append(Attempt(number, error=f"{type(exc).__name__}: {exc}"[:2000],
                                                    latency_ms=(time.perf_counter() - started) * 1000))
                    if not _retryable(exc) or number > self.num_retries:
                        return
                    if wait is None:
                        wait = min(BACKOFF_CAP, self.backoff * (2 ** (number - 1))) * (0.5 + random.random())
                else:
                    outcome.attempts.append(self._success(lib, number, response, started))
                    return
                finally:
                    await self.limiter.release(started_round, throttled=throttled)
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            outcome.attempts.append(Attempt(number or 1, error=CANCELLED))

    @staticmethod
    def _success(lib: Any, number: int, response: Any, started: float) -> Attempt:
        latency = (time.perf_counter() - started) * 1000
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError):
            text = None
        usage = getattr(response, "usage", None)
        cost = None
        hidden = getattr(response, "_hidden_params", None) or {}
        if isinstance(hidden, dict) and hidden.get("response_cost") is not None:
            cost = float(hidden["response_cost"])  # litellm's own figure, when it knows the model's price
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
