"""Model calls through litellm's async client, from one background event loop.

Calls run concurrently under an adaptive limit (AIMD, see limiter.py) that
starts at max_concurrency and backs off when the provider throttles. 429, 408,
5xx, timeouts and connection errors are retried with jittered exponential
backoff (capped at 4 s) or, when the provider sends one, after Retry-After
(capped at 60 s); other errors (400, 401, 404...) fail at once. Our own per-call
timeout replaces litellm's 6,000 s default.

CPU per call matters (a query can judge tens of thousands of values), so each
call hands litellm a logging object that switches off litellm's own success and
failure logging and its cost bookkeeping: meansql logs every attempt itself and
prices tokens from a per-model price looked up once. The call still goes
through ``litellm.acompletion`` and litellm's HTTP stack.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import email.utils
import functools
import gc
import importlib
import logging
import os
import random
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from semantic_ops.judges.base import Attempt, JudgeRequest, Outcome
from semantic_ops.judges.limiter import AdaptiveLimiter, Result
from semantic_ops.judges.prepared import PreparedCalls

log = logging.getLogger(__name__)

RETRY_AFTER_CAP = 60.0
BACKOFF_CAP = 4.0
PROGRESS_INTERVAL = 0.5  # seconds between progress reports
CANCELLED = "cancelled"  # the error of an attempt cut short by the query's cancel flag
_POLL = 0.02  # how often the event loop looks at a running batch's cancel flag
BACKSTOP = 10.0  # seconds past the timeout after which an attempt is cut short whatever litellm is doing
_SWEEP = 0.5  # how often the event loop looks for attempts past the backstop
_PRICE_PROBE_TOKENS = 1000  # small enough to stay in every model's first price tier
GEN0_THRESHOLD = 20_000  # the collector's gen-0 threshold while judging (see _YoungCollections)

Progress = Callable[[int], None]


def _import_litellm() -> Any:
    # The cost map would otherwise be fetched from the internet on import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # OpenAI-compatible models go through litellm's own HTTP handler rather than the OpenAI SDK:
    # same requests, errors and headers (the judge tests pass on both), about 0.7 ms less CPU per
    # call, which the SDK spends transforming the request body against its TypedDicts. Setting the
    # variable to "false" before start-up brings the SDK path back.
    os.environ.setdefault("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "true")
    import litellm

    litellm.suppress_debug_info = True
    # Importing litellm leaves ~300,000 long-lived objects (cost map, provider configs) that every
    # full collection would walk again, ~0.2 s each time; move them out of the collector's sight.
    gc.collect()
    gc.freeze()
    return litellm


def _quiet_logging_class() -> Any:
    """litellm's per-call Logging class with its success/failure logging and cost bookkeeping switched off.

    Passed per call as ``litellm_logging_obj``; without it each call builds a standard logging
    payload, computes the response cost twice (through a model-info search that fails slowly for
    models litellm has no price for) and schedules an async success-logging task: about half of
    litellm's CPU per call. meansql records every attempt itself and never registers litellm
    callbacks, so nothing that was switched off was in use.
    """
    base: Any = importlib.import_module("litellm.litellm_core_utils.litellm_logging").Logging

    def nothing(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    async def nothing_async(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def no_cost(self: Any, *args: Any, **kwargs: Any) -> float | None:
        return None

    def no_claim(self: Any) -> bool:
        return False  # never schedule litellm's async success-logging task

    overrides: dict[str, Any] = {
        "response_cost_calculator": no_cost,
        "claim_async_success_log": no_claim,
        "async_success_handler": nothing_async,
        "success_handler": nothing,
        "handle_sync_success_callbacks_for_async_calls": nothing,
        "failure_handler": nothing,
        "async_failure_handler": nothing_async,
        "pre_call": nothing,
        "post_call": nothing,
    }
    missing = [name for name in overrides if not hasattr(base, name)]
    if missing:
        # A litellm upgrade renamed something: the call still works, it just costs more CPU.
        log.warning("litellm's Logging lacks %s; its logging overhead is only partly switched off", ", ".join(missing))
    overrides["meansql_quiet"] = True  # read by _time_only_logged_calls
    return type("MeansqlQuietLogging", (base,), overrides)


def _time_only_logged_calls(lib: Any) -> None:
    """Skip litellm's HTTP timing wrapper for calls whose logging meansql switched off.

    litellm wraps its async HTTP post in ``track_llm_api_timing``: per call it reads the clock
    four times, looks for an OpenTelemetry parent span, writes the duration into the logging
    object's details (read only by litellm's own success logging and response metadata) and
    schedules an asyncio task that builds a service-logger payload for ``litellm.service_callback``:
    about 5% of the judge's CPU per call. For a call made with meansql's quiet logging object
    (see _quiet_logging_class) while no service callback is registered, nobody reads any of that,
    so the post runs unwrapped; every other call (another logging object, a service callback set)
    takes the wrapper as before. Installed once, on litellm's ``AsyncHTTPHandler``.
    """
    handler_class = getattr(importlib.import_module("litellm.llms.custom_httpx.http_handler"), "AsyncHTTPHandler", None)
    timed = getattr(handler_class, "__dict__", {}).get("post")
    if getattr(timed, "meansql_untimed", False):
        return
    plain = getattr(timed, "__wrapped__", None)
    if timed is None or plain is None or not asyncio.iscoroutinefunction(plain) or not hasattr(lib, "service_callback"):
        # A litellm upgrade moved something: calls still work, they just cost more CPU.
        log.warning("litellm's HTTP timing wrapper changed shape; it runs for every call")
        return

    @functools.wraps(plain)
    async def post(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(kwargs.get("logging_obj"), "meansql_quiet", False) and not lib.service_callback:
            return await plain(self, *args, **kwargs)
        return await timed(self, *args, **kwargs)

    post.meansql_untimed = True  # type: ignore[attr-defined]
    setattr(handler_class, "post", post)  # noqa: B010 - a method litellm's stubs type


# Providers whose model info is a static lookup in litellm's cost map (no provider API consulted).
_STATIC_MODEL_INFO_PROVIDERS = frozenset({"openai"})


def _memoise_model_info(lib: Any) -> None:
    """Make litellm's per-call model-info lookup a dictionary hit for OpenAI-style models.

    ``completion()`` looks the model up twice per call (``responses_api_bridge_check``) with an
    uncached helper that, for a model litellm has no entry for (a self-hosted or proxied model
    name), searches every spelling and generalisation of the name and raises: about 8% of the
    judge's CPU per call. For the openai provider that lookup reads only litellm's cost map, so
    its answer, or its failure, is the same for the same arguments until the cost map changes;
    the memo is keyed by the map's identity and litellm's own mutation counter, hands out copies
    (the caller edits what it gets), and raises a fresh exception for a failure. Other providers
    still take litellm's own path. Installed once, in litellm's ``main`` module only.
    """
    main = importlib.import_module("litellm.main")
    utils = importlib.import_module("litellm.utils")
    lookup = getattr(main, "get_model_info_helper", None)
    generation = getattr(utils, "get_model_cost_mutation_generation", None)
    if getattr(lookup, "meansql_memo", False):
        return
    if lookup is None or generation is None or lookup is not getattr(utils, "get_model_info_helper", None):
        # A litellm upgrade moved something: calls still work, they just cost more CPU.
        log.warning("litellm's model-info lookup changed shape; it is not memoised")
        return
    memo: dict[tuple[Any, ...], tuple[dict[str, Any] | None, BaseException | None]] = {}
    original = cast("Callable[..., Any]", lookup)
    stamp = cast("Callable[[], Any]", generation)

    @functools.wraps(original)
    def memoised(model: str, custom_llm_provider: str | None = None, api_base: str | None = None,
                 api_key: str | None = None) -> Any:
        if custom_llm_provider not in _STATIC_MODEL_INFO_PROVIDERS:
            return original(model=model, custom_llm_provider=custom_llm_provider, api_base=api_base, api_key=api_key)
        key = (id(lib.model_cost), stamp(), model, custom_llm_provider, api_base, api_key)
        hit = memo.get(key)
        if hit is None:
            try:
                hit = (dict(original(model=model, custom_llm_provider=custom_llm_provider, api_base=api_base,
                                   api_key=api_key)), None)
            except Exception as exc:
                hit = (None, exc.with_traceback(None))  # kept without the frames it was raised through
            if len(memo) >= 1024:  # stale stamps after cost-map changes
                memo.clear()
            memo[key] = hit
        if hit[1] is not None:
            raise _fresh(hit[1])
        assert hit[0] is not None
        return dict(hit[0])

    memoised.meansql_memo = True  # type: ignore[attr-defined]
    setattr(main, "get_model_info_helper", memoised)  # noqa: B010 - a module attribute litellm's stubs do not name


_COOKIE_HEADERS = (b"set-cookie", b"set-cookie2")


def _skip_cookieless_responses() -> None:
    """Let httpx's cookie handling pass over a response that sets no cookie.

    litellm's HTTP client (httpx) hands every response to its cookie jar, which first builds urllib's
    request and message objects for it (a URL parse and a copy of every header) only to find, for almost
    every model answer, no Set-Cookie header: about a tenth of the judge's CPU per call. A response with
    neither Set-Cookie nor Set-Cookie2 is skipped here, which is what the jar itself would end up doing
    with it (its only other effect is refreshing its clock, which it does again before every use); any
    other response goes to the jar as before, so cookies a provider sets are kept and sent back. Installed
    once, on httpx's Cookies class.
    """
    httpx = importlib.import_module("httpx")
    original = getattr(httpx.Cookies, "extract_cookies", None)
    if original is None or getattr(original, "meansql_skip", False):
        return

    @functools.wraps(original)
    def extract_cookies(self: Any, response: Any) -> None:
        raw = getattr(getattr(response, "headers", None), "raw", None)
        if raw is not None and not any(key.lower() in _COOKIE_HEADERS for key, _ in raw):
            return
        original(self, response)

    extract_cookies.meansql_skip = True  # type: ignore[attr-defined]
    setattr(httpx.Cookies, "extract_cookies", extract_cookies)  # noqa: B010 - a method httpx's stubs type


_PARSED_URLS = 256  # distinct URL strings whose parse is kept (a judge sends to a handful of endpoints)


def _memoise_url_parsing() -> None:
    """Parse each URL string once in httpx, and each Content-Type's charset once.

    litellm hands httpx the endpoint as a string on every call, and httpx parses it afresh
    (``httpx.URL(str)``: its RFC 3986 parser, percent-quoting every component), then reads the
    answer's charset by building a ``email.message.Message`` for its Content-Type header: together
    about 3% of the judge's CPU per call, for the same one or two strings every time. Both
    functions are pure and their results immutable (a NamedTuple of strings, a string or None),
    so they are memoised, for calls without keyword arguments only; an invalid URL still raises
    every time (exceptions are not kept). Installed once, on httpx's ``_urls`` and ``_models``
    modules; if httpx's shape changed, nothing is installed.
    """
    urls = importlib.import_module("httpx._urls")
    urlparse_module = importlib.import_module("httpx._urlparse")
    models = importlib.import_module("httpx._models")
    parse = getattr(urls, "urlparse", None)
    charset = getattr(models, "_parse_content_type_charset", None)
    if getattr(parse, "meansql_memo", False):
        return
    result = getattr(urlparse_module, "ParseResult", None)
    if (
        parse is None
        or parse is not getattr(urlparse_module, "urlparse", None)
        or charset is None
        or not (isinstance(result, type) and issubclass(result, tuple))
    ):
        log.warning("httpx's URL parsing changed shape; it is not memoised")
        return
    original = cast("Callable[..., Any]", parse)
    parse_string = functools.lru_cache(maxsize=_PARSED_URLS)(original)

    @functools.wraps(original)
    def urlparse(url: str = "", **kwargs: Any) -> Any:
        if kwargs or type(url) is not str:
            return original(url, **kwargs)
        return parse_string(url)

    urlparse.meansql_memo = True  # type: ignore[attr-defined]
    setattr(urls, "urlparse", urlparse)  # noqa: B010 - a module attribute httpx's stubs do not name
    setattr(models, "_parse_content_type_charset", functools.lru_cache(maxsize=64)(cast("Callable[[str], str | None]", charset)))  # noqa: B010


def _fresh(failure: BaseException) -> BaseException:
    """A new exception like ``failure``, to raise again without growing its traceback.

    Built here rather than in the raising frame, so that no local of that frame refers to the
    exception whose traceback refers to the frame: such a cycle outlives the call until the
    garbage collector finds it, and takes every frame of the call with it.
    """
    try:
        return type(failure)(*failure.args)
    except Exception:
        return Exception(str(failure))


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (Retry-After / retry-after-ms), capped at 60 s."""
    # litellm keeps the provider's headers on the exception; its .response is often a stub.
    candidates = (getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None),
                  getattr(getattr(exc, "response", None), "headers", None))
    for headers in candidates:
        if headers is None or not hasattr(headers, "get"):
            continue
        millis = headers.get("retry-after-ms")
        if millis is not None:
            try:
                return min(max(float(millis) / 1000.0, 0.0), RETRY_AFTER_CAP)
            except ValueError:
                pass
        value = headers.get("retry-after")
        if value is not None:
            return _parse_retry_after(str(value))
    return None


def _parse_retry_after(value: str) -> float | None:
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return min(max((when - datetime.datetime.now(datetime.UTC)).total_seconds(), 0.0), RETRY_AFTER_CAP)


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _retryable(exc: BaseException) -> bool:
    status = _status(exc)
    if status is not None:
        return status == 429 or status >= 500 or status == 408
    name = type(exc).__name__
    return any(k in name for k in ("Timeout", "Connection", "RateLimit", "ServiceUnavailable", "InternalServer"))


# Models whose request preparation in litellm is pure computation (no credential refresh, no file
# or network access before the HTTP call), so it may run on the event loop thread.
_INLINE_PREFIXES = ("openai/", "gpt-", "o1", "o3", "o4")


class _CoalescingSelector(selectors.EpollSelector):
    """An epoll selector that, with many connections open, lets answers gather for a moment before handling them.

    With 64 calls in flight their answers arrive a few milliseconds apart, and on an idle machine the loop wakes
    for each one alone: every wake-up costs a turn of the loop (its timers, its ready queue, an epoll call) on top of
    the answer's own work, about 1 ms of CPU per call in all. When a wait returns only a few events while many
    sockets are open, the selector sleeps ``pause`` seconds (the GIL released) and collects what arrived meanwhile,
    so one turn handles several answers: like a network card's interrupt coalescing. Each answer is handled at most
    ``pause`` later, nothing next to a model call's hundreds of milliseconds; with few sockets open (a lone call,
    a test against a local stand-in) nothing waits. 5 ms rather than 2 ms (and fewer than 8 events rather than 4)
    took `bench.semantic --only a` from 2.03-2.34 to 1.77-1.93 ms of CPU per call, and its wall time from 1.16 to
    1.20-1.21 times the floor (three runs each).
    """

    def __init__(self, pause: float = 0.005, min_open: int = 8, few: int = 8) -> None:
        super().__init__()
        self.pause = pause
        self.min_open = min_open
        self.few = few

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(timeout)
        if not events or len(events) >= self.few or len(self.get_map()) < self.min_open:
            return events
        time.sleep(self.pause)
        more = super().select(0)
        if more:
            seen = {key.fd for key, _ in events}
            events.extend(e for e in more if e[0].fd not in seen)
        return events


class _JudgeLoop(asyncio.SelectorEventLoop):
    """The judge's event loop: runs litellm's request preparation inline when it is pure.

    ``litellm.acompletion`` prepares every request by running its synchronous ``completion()`` in
    the loop's default executor and awaiting the result through a thread-safe future, which wakes
    the loop through its self-pipe: a thread hop and a syscall per call. For OpenAI-style models
    that preparation only computes, so it runs right here on the loop thread and its result comes
    back in a future that is already done (no wake-up, no extra turn of the loop); anything else
    (a provider that may refresh credentials or read files) still gets a thread.
    """

    def run_in_executor(  # type: ignore[override]
            self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if executor is not None or not _pure_preparation(func):
            return super().run_in_executor(executor, func, *args)
        future: asyncio.Future[Any] = self.create_future()
        try:
            future.set_result(func(*args))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # handed to the awaiting coroutine, as a worker thread would
            future.set_exception(exc)
        return future


def _pure_preparation(fn: Any) -> bool:
    # litellm submits partial(context.run, partial(completion, model=..., ...)).
    inner = fn.args[0] if isinstance(fn, functools.partial) and fn.args else None
    if not isinstance(inner, functools.partial) or getattr(inner.func, "__name__", "") != "completion":
        return False
    model = inner.keywords.get("model")
    return isinstance(model, str) and model.startswith(_INLINE_PREFIXES)


class _YoungCollections:
    """Collect the youngest generation less often while any judge() runs, and as before once none does.

    Each call allocates a few thousand objects (request, response and their pydantic models) that
    live until the answer comes back, 0.3 s or more later; with 64 calls in flight the default
    threshold (700) runs a young collection every few calls, which walks them all and moves the
    survivors to the next generation, whose collections then walk them again. Almost all of them
    are freed by reference counting, so a higher threshold saves that work without holding on to
    garbage. The threshold is process-wide; nesting (several sessions judging at once) is counted.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._lock = threading.Lock()
        self._active = 0
        self._saved: tuple[int, int, int] | None = None

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                saved = gc.get_threshold()
                self._saved = saved
                if saved[0] and saved[0] < self.threshold:  # 0: collection is off; leave it off
                    gc.set_threshold(self.threshold, saved[1], saved[2])
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._saved is not None:
                if gc.get_threshold()[0] == self.threshold:  # nobody changed it meanwhile
                    gc.set_threshold(*self._saved)
                self._saved = None


_YOUNG_COLLECTIONS = _YoungCollections(GEN0_THRESHOLD)


@dataclass(eq=False)
class _Call:
    """One request's progress through its attempts."""

    outcome: Outcome = field(default_factory=Outcome)
    started: float | None = None  # perf_counter() of the attempt in flight
    finished: bool = False
    task: asyncio.Task[None] | None = None
    deadline: float = 0.0  # perf_counter() past which the attempt in flight is cut short (see _Batch.sweep)
    overdue: bool = False  # the attempt in flight was cut short


class _Batch:
    """The calls of one judge() invocation, its tasks and its progress reports (event loop thread only)."""

    def __init__(self, size: int, cancel: threading.Event, progress: Progress | None) -> None:
        self.calls = [_Call() for _ in range(size)]
        self.cancel = cancel
        self.progress = progress
        self.tasks: list[asyncio.Task[None]] = []
        self.settings: tuple[Any, ...] | None = None  # litellm's settings when the batch started (see prepared.py)
        self.watch: asyncio.TimerHandle | None = None  # the next look at the cancel flag
        self.running: set[_Call] = set()  # calls with an attempt in flight
        self._swept_at = time.perf_counter()
        self.done = 0
        self._reported_at = time.monotonic()

    def abort(self) -> None:
        """Cancel every unfinished call (in flight, waiting for a slot or backing off)."""
        for task in self.tasks:
            task.cancel()

    def sweep(self) -> None:
        """Cut short the attempts past their deadline, at most every _SWEEP seconds.

        The backstop behind litellm's own timeout: one look at the calls in flight now and then
        costs less than a timer per attempt (an ``asyncio.timeout`` was about 1% of a call's CPU).
        """
        now = time.perf_counter()
        if now - self._swept_at < _SWEEP:
            return
        self._swept_at = now
        for call in self.running:
            if call.deadline <= now and not call.overdue and call.task is not None:
                call.overdue = True
                call.task.cancel()

    def finished(self, call: _Call) -> None:
        call.finished = True
        self.done += 1
        if self.progress is not None and time.monotonic() - self._reported_at >= PROGRESS_INTERVAL:
            self.report()

    def report(self) -> None:
        self._reported_at = time.monotonic()
        if self.progress is None:
            return
        try:
            self.progress(self.done)
        except Exception:  # a broken progress callback must not lose the answers
            log.exception("progress callback failed; no more progress reports for this batch")
            self.progress = None

    def settle_unfinished(self) -> None:
        """Give every call that did not finish a last attempt that says it was cancelled."""
        now = time.perf_counter()
        for call in self.calls:
            if not call.finished:
                latency = (now - call.started) * 1000 if call.started is not None else 0.0
                call.outcome.attempts.append(Attempt(len(call.outcome.attempts) + 1, error=CANCELLED, latency_ms=latency))


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
        backoff: float = 0.5,
        replay: bool = True,
    ) -> None:
        self.name = "litellm"
        self.api_base = api_base
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.timeout = min(timeout, 60.0)
        self.num_retries = num_retries
        self.backoff = backoff
        self._litellm: Any = None
        self._logging_class: Any = None
        self._replay = replay
        self._prepared: PreparedCalls | None = None
        self._import_lock = threading.Lock()  # warm_up() and the first query may race to import
        self._prices: dict[str, tuple[float, float] | None] = {}
        self._froze_lazy_imports = False
        self._limiter = AdaptiveLimiter(max_concurrency)
        self._loop = _JudgeLoop(_CoalescingSelector())
        self._loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=4,
                                                                              thread_name_prefix="meansql-judge-prep"))
        self._thread = threading.Thread(target=self._loop.run_forever, name="meansql-judge", daemon=True)
        self._thread.start()

    @property
    def current_concurrency(self) -> int:
        """Calls the adaptive limit allows in flight now (max_concurrency until the provider throttles)."""
        return self._limiter.current

    def _lib(self) -> Any:
        with self._import_lock:
            if self._litellm is None:
                lib = _import_litellm()
                self._logging_class = _quiet_logging_class()
                _memoise_model_info(lib)
                _skip_cookieless_responses()
                _memoise_url_parsing()
                _time_only_logged_calls(lib)
                self._prepared = PreparedCalls(lib) if self._replay else None
                self._litellm = lib
            return self._litellm

    def warm_up(self, model: str | None = None) -> None:
        """Import litellm now rather than on the first query. With a model, also take calls through
        litellm's code for it that reach no provider, so that its lazy imports and HTTP set-up
        (~0.25 s) happen now: one answered locally (mock_response) and, for OpenAI-style models,
        one sent to a loopback port where nothing listens (refused at once)."""
        started = time.monotonic()
        lib = self._lib()
        if model:
            request = JudgeRequest(model, ({"role": "user", "content": "warm-up"},))
            self._warm_call(self._complete(lib, request, mock_response="true"))
            if model.startswith(_INLINE_PREFIXES):
                with socket.socket() as closed:  # bound, never listening: connections are refused
                    closed.bind(("127.0.0.1", 0))
                    port = closed.getsockname()[1]
                    self._warm_call(self._complete(lib, request, api_base=f"http://127.0.0.1:{port}/v1"))
            # What those calls imported is as long-lived as litellm itself (see _import_litellm).
            gc.collect()
            gc.freeze()
        log.info("model calls ready: litellm imported%s in %.1f s", f" and warmed up for {model}" if model else "",
                 time.monotonic() - started)

    def _warm_call(self, call: Coroutine[Any, Any, Any]) -> None:
        try:
            asyncio.run_coroutine_threadsafe(call, self._loop).result(timeout=30)
        except Exception as exc:  # expected for the refused call; a failed warm-up only costs the first query time
            log.debug("model warm-up call ended: %s", exc)

    def judge(self, requests: list[JudgeRequest], cancel: threading.Event,
              progress: Progress | None = None) -> list[Outcome]:
        """One outcome per request, in order; never raises for a failed call (see Outcome.error).

        When ``cancel`` is set no further attempt starts, calls in flight are cancelled and the
        outcomes come back within ~0.1 s: answers already paid for, and for every unfinished
        request a last attempt whose error is "cancelled". ``progress`` (called on the judge's
        event loop thread) gets the number of requests finished so far (answered, or failed for
        good), at most about twice a second, and once more at the end.
        """
        lib = self._lib()
        batch = _Batch(len(requests), cancel, progress)
        batch.settings = self._prepared.settings() if self._prepared is not None else None
        with _YOUNG_COLLECTIONS:
            # The event loop watches the cancel flag (see _judge_all), so this thread sleeps until the outcomes are
            # in: a thread that woke every few milliseconds to look would take Python's interpreter lock from the
            # loop each time.
            outcomes = asyncio.run_coroutine_threadsafe(self._judge_all(lib, requests, batch), self._loop).result()
        if not self._froze_lazy_imports:
            # The first calls import the rest of litellm lazily; freeze those objects too (see _import_litellm).
            self._froze_lazy_imports = True
            gc.freeze()
        return outcomes

    async def _judge_all(self, lib: Any, requests: list[JudgeRequest], batch: _Batch) -> list[Outcome]:
        batch.tasks = [asyncio.ensure_future(self._judge_one(lib, r, call, batch)) for r, call in zip(requests, batch.calls)]
        for task, call in zip(batch.tasks, batch.calls):
            call.task = task
        batch.watch = self._loop.call_later(_POLL, self._watch_cancel, batch)
        try:
            if batch.tasks:
                await asyncio.wait(batch.tasks)
        finally:
            if batch.watch is not None:
                batch.watch.cancel()
            batch.abort()  # only does something if this coroutine itself was cancelled
        for task, call in zip(batch.tasks, batch.calls):
            exc = None if task.cancelled() else task.exception()
            if exc is not None and not call.finished:
                # A bug of ours, not the provider's answer: say so rather than "cancelled".
                log.error("judging a request failed unexpectedly", exc_info=exc)
                call.outcome.attempts.append(Attempt(len(call.outcome.attempts) + 1, error=f"internal error: {exc!r}"[:2000]))
                batch.finished(call)
        batch.settle_unfinished()
        batch.report()
        return [call.outcome for call in batch.calls]

    def _watch_cancel(self, batch: _Batch) -> None:
        """Every _POLL seconds while the batch runs: once its cancel flag is set, cancel its unfinished calls;
        meanwhile, cut short attempts past the backstop."""
        if batch.cancel.is_set():
            batch.watch = None
            batch.abort()
        else:
            batch.sweep()
            batch.watch = self._loop.call_later(_POLL, self._watch_cancel, batch)

    async def _judge_one(self, lib: Any, request: JudgeRequest, call: _Call, batch: _Batch) -> None:
        cancel = batch.cancel
        for number in range(1, self.num_retries + 2):
            if cancel.is_set():
                return
            slot = await self._limiter.acquire()
            result = Result.NEUTRAL
            wait: float | None = None
            try:
                if cancel.is_set():
                    return
                call.started = time.perf_counter()
                call.deadline = call.started + self.timeout + BACKSTOP
                batch.running.add(call)
                try:
                    try:
                        response = await self._complete(lib, request, settings=batch.settings, backstop=False)
                    except asyncio.CancelledError:
                        # Cut short by the batch's sweep (and by nothing else): the attempt timed out.
                        task = asyncio.current_task()
                        if not call.overdue or task is None or task.uncancel() > 0:
                            raise
                        raise TimeoutError(f"no answer within {self.timeout + BACKSTOP:.0f} s") from None
                    finally:
                        batch.running.discard(call)
                        call.overdue = False
                except Exception as exc:
                    latency = (time.perf_counter() - call.started) * 1000
                    status = _status(exc)
                    wait = _retry_after(exc)
                    throttled = status == 429 or wait is not None
                    result = Result.THROTTLED if throttled else Result.NEUTRAL
                    call.outcome.attempts.append(Attempt(number, error=f"{type(exc).__name__}: {exc}"[:2000],
                                                         latency_ms=latency, status=status, throttled=throttled))
                    call.started = None
                    if not _retryable(exc) or number > self.num_retries:
                        batch.finished(call)
                        return
                else:
                    result = Result.OK
                    call.outcome.attempts.append(self._success(lib, number, request.model, response, call.started))
                    call.started = None
                    batch.finished(call)
                    return
            finally:
                self._limiter.release(slot, result)
            if wait is None:
                base = min(BACKOFF_CAP, self.backoff * (2 ** (number - 1)))
                wait = base * (0.5 + random.random() / 2)
            await asyncio.sleep(wait)

    async def _complete(self, lib: Any, request: JudgeRequest, *, api_base: str | None = None,
                        settings: tuple[Any, ...] | None = None, backstop: bool = True, **extra: Any) -> Any:
        """One attempt through litellm. ``settings``: PreparedCalls.settings() of this batch (None: no replay).
        ``backstop``: time the attempt out BACKSTOP seconds after litellm's timeout (a batch does it itself)."""
        call_id = str(uuid.UUID(int=random.getrandbits(128), version=4))  # an id, not a secret: no syscall
        messages = list(request.messages)
        logging_obj = self._logging_class(
            model=request.model, messages=messages, stream=False, call_type="acompletion",
            start_time=datetime.datetime.now(), litellm_call_id=call_id, litellm_trace_id=call_id, function_id="",
        )
        api_base = api_base or self.api_base
        options = {"num_retries": 0, "max_retries": 0}
        key = None
        if not extra and self._prepared is not None:
            key = self._prepared.key(request.model, messages,
                                     (api_base, self.api_key, self.timeout, request.temperature, request.max_tokens),
                                     settings)
        # litellm enforces `timeout` on the HTTP request; this is a backstop for anything around it.
        async with asyncio.timeout(self.timeout + BACKSTOP) if backstop else contextlib.nullcontext():
            if key is not None and self._prepared is not None:
                prepared = self._prepared.lookup(key)
                if prepared is not None:
                    return await self._prepared.call(prepared, messages, logging_obj, call_id)
                if self._prepared.known(key):
                    key = None  # recorded before and not replayable: litellm's whole path
            # What litellm's own per-call setup would do before the call (see litellm.utils.function_setup).
            logging_obj.update_environment_variables(model=request.model, user="", optional_params={},
                                                     litellm_params={"api_base": ""})
            with self._recording(key, request.model, messages, call_id, {"api_base": api_base, **options}):
                return await lib.acompletion(
                    model=request.model,
                    messages=messages,
                    api_base=api_base,
                    api_key=self.api_key,
                    timeout=self.timeout,
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    litellm_call_id=call_id,
                    litellm_logging_obj=logging_obj,
                    **options,
                    **extra,
                )

    def _recording(self, key: tuple[Any, ...] | None, model: str, messages: list[dict[str, str]], call_id: str,
                   extra_kwargs: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
        """Record litellm's preparation of this call when its combination has none yet (see prepared.py)."""
        if key is None or self._prepared is None:
            return contextlib.nullcontext()
        return self._prepared.recording(key, model, messages, call_id, extra_kwargs)

    def _success(self, lib: Any, number: int, model: str, response: Any, started: float) -> Attempt:
        latency = (time.perf_counter() - started) * 1000
        text = None
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError):
            text = None
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        return Attempt(
            number,
            text=text,
            error=None if text is not None else "empty answer",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=self._cost(lib, model, prompt_tokens, completion_tokens),
            latency_ms=latency,
            status=200,
        )

    def _cost(self, lib: Any, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """Dollars for the tokens at the model's list price; None when litellm has no price for it."""
        if prompt_tokens is None or completion_tokens is None:
            return None
        if model not in self._prices:
            self._prices[model] = _prices(lib, model)
        prices = self._prices[model]
        if prices is None:
            return None
        return prompt_tokens * prices[0] + completion_tokens * prices[1]

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def _prices(lib: Any, model: str) -> tuple[float, float] | None:
    """(input, output) dollars per token from litellm's cost map, looked up once per model."""
    try:
        prompt_cost, _ = lib.cost_per_token(model=model, prompt_tokens=_PRICE_PROBE_TOKENS, completion_tokens=0)
        _, completion_cost = lib.cost_per_token(model=model, prompt_tokens=0, completion_tokens=_PRICE_PROBE_TOKENS)
        return float(prompt_cost) / _PRICE_PROBE_TOKENS, float(completion_cost) / _PRICE_PROBE_TOKENS
    except Exception:  # unknown models have no price; cost stays NULL
        log.debug("no price for %s; costs stay NULL", model, exc_info=True)
        return None


def embedding_encoder(model: str, *, api_base: str | None = None, api_key: str | None = None,
                      timeout: float = 30.0) -> Callable[[list[str]], list[list[float]]]:
    """An encoder for training.embeddings.Embedder that calls a litellm embedding model."""

    def encode(texts: list[str]) -> list[list[float]]:
        lib = _import_litellm()
        response = lib.embedding(model=model, input=texts, api_base=api_base, api_key=api_key, timeout=timeout)
        rows = sorted(response.data, key=lambda d: d["index"] if isinstance(d, dict) else d.index)
        return [list(d["embedding"] if isinstance(d, dict) else d.embedding) for d in rows]

    return encode
