"""litellm's request preparation, done once per (model, parameters) and replayed for later calls.

``litellm.acompletion`` spends about half of its CPU per call before any byte is sent: its
``client`` wrapper (callbacks, cache, budget and retry hooks), then ``completion()``, which
resolves the provider, maps and validates the parameters, builds ``litellm_params`` and the
provider's config, and hands all of that to its HTTP handler (``base_llm_http_handler``). For an
OpenAI-style model none of that depends on the messages: the same model, endpoint, key, timeout,
temperature and max_tokens give the same arguments every time, bar the call id.

So the first call of each such combination goes through ``litellm.acompletion`` as usual, and
the arguments ``completion()`` handed the HTTP handler are recorded. Later calls hand the handler
those arguments again with their own messages, call id, logging object and empty response, and
map a failure through litellm's own ``exception_type``, as ``acompletion`` does: the request
body, its headers, the transport, the response parsing and the errors are litellm's own.

Guards, each falling back to the plain ``acompletion`` path:
- only chat calls to the ``openai`` provider (the first call must reach the chat handler: a model
  litellm sends to its Responses API bridge is never recorded), without streaming, a client of
  our own or a shared session;
- only plain ``{"role", "content": str}`` messages, which ``completion()`` passes on unchanged
  (the first call checks that it did);
- only while litellm has no callbacks, cache, budget, fallbacks or model aliases, whose hooks
  run in the skipped wrapper; these globals, with litellm's credentials and headers from its
  settings and the environment, are part of the key, so a change of them records again;
- a handler argument we do not know (a litellm upgrade) means the combination is not recorded.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import importlib
import logging
import os
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

log = logging.getLogger(__name__)

_MAX_ENTRIES = 256  # combinations kept; a judge sees a handful (one per operator cell and model)
_ROLES = frozenset({"system", "user", "assistant"})
# The arguments completion() hands the chat handler in litellm 1.106; any other one is a shape we do not know.
_KNOWN_ARGUMENTS = frozenset(
    {
        "model",
        "messages",
        "api_base",
        "custom_llm_provider",
        "model_response",
        "encoding",
        "logging_obj",
        "optional_params",
        "timeout",
        "litellm_params",
        "shared_session",
        "acompletion",
        "stream",
        "api_key",
        "headers",
        "client",
        "provider_config",
    }
)
_PER_CALL = ("messages", "model_response", "logging_obj", "optional_params", "litellm_params", "headers")
_COPIED = frozenset({"optional_params", "litellm_params", "headers"})  # dicts the handler may edit
# Environment variables litellm reads while preparing an OpenAI-style call.
_ENVIRONMENT = ("OPENAI_API_KEY", "OPENAI_ORGANIZATION", "OPENAI_BASE_URL", "OPENAI_API_BASE", "LITELLM_USER_AGENT")
# litellm settings whose hooks run in the wrapper the replay skips: the replay is used only while they are empty.
_HOOKS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "input_callback",
    "service_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "_async_input_callback",
    "pre_call_rules",
    "post_call_rules",
    "model_alias_map",
)
_NONE_OR_FALSY = ("cache", "max_budget", "model_fallbacks")
# litellm settings completion() reads for an OpenAI-style call: part of the key.
_SETTINGS = (
    "api_key",
    "openai_key",
    "organization",
    "headers",
    "drop_params",
    "modify_params",
    "request_timeout",
    "enable_preview_features",
    "redact_messages_in_exceptions",
)

_recording: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar("meansql_litellm_recording", default=None)


@dataclass
class _Recording:
    """One call being recorded: filled by the handler's wrapper, which hands it to ``done`` at once."""

    done: Callable[[_Recording], None]
    arguments: dict[str, Any] | None = None
    hidden_params: dict[str, Any] = field(default_factory=dict)
    has_usage: bool = False


@dataclass(frozen=True)
class Prepared:
    """The handler's arguments for one combination of model and parameters, minus the per-call ones."""

    model: str  # as the caller named it, e.g. "openai/gpt-4o-mini"
    arguments: dict[str, Any]  # shared; copied per call where the handler may write
    optional_params: dict[str, Any]
    litellm_params: dict[str, Any]
    headers: dict[str, Any] | None
    call_id_keys: tuple[str, ...]  # the keys of litellm_params that hold the call id
    hidden_params: dict[str, Any]
    has_usage: bool
    extra_kwargs: dict[str, Any]  # what acompletion would hand litellm's exception mapping


class PreparedCalls:
    """Records and replays litellm's preparation of OpenAI-style chat calls (event loop thread only)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self._memo: dict[tuple[Any, ...], Prepared | None] = {}  # None: recorded once, not replayable
        self._handler, self._complete = _install_recorder()
        self._exception_type: Callable[..., BaseException] | None = getattr(lib, "exception_type", None)
        self._model_response: Any = getattr(lib, "ModelResponse", None)
        self._usage: Any = getattr(lib, "Usage", None)
        self.enabled = (
            self._complete is not None and self._exception_type is not None and self._model_response is not None and self._usage is not None
        )
        self.replays = 0  # calls that went through a recorded preparation (tests read it)
        self._usage_template: Any = None

    def _empty_usage(self) -> Any:
        """A fresh ``Usage()``: a copy of one built once, about half the CPU (its fields are numbers and None)."""
        if self._usage_template is None:
            self._usage_template = self._usage()
        return copy.copy(self._usage_template)

    def settings(self) -> tuple[Any, ...] | None:
        """litellm's settings and environment as they are now (part of each key), or None while replay is off.

        Read once per judge() call rather than per model call: reading the environment costs more
        than the rest of the key.
        """
        if not self.enabled:
            return None
        lib = self._lib
        for name in _HOOKS:
            if getattr(lib, name, None):
                return None
        for name in _NONE_OR_FALSY:
            if getattr(lib, name, None):
                return None
        return (
            tuple(repr(getattr(lib, name, None)) for name in _SETTINGS),
            tuple(os.environ.get(name) for name in _ENVIRONMENT),
            id(getattr(lib, "model_cost", None)),
        )

    @staticmethod
    def key(model: str, messages: list[dict[str, Any]], parameters: tuple[Any, ...], settings: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        """The memo key of a call, or None when the call must take litellm's whole path."""
        if settings is None or not model.startswith("openai/"):
            return None
        for message in messages:
            if type(message) is not dict or len(message) != 2 or message.get("role") not in _ROLES or type(message.get("content")) is not str:
                return None
        return (model, parameters, settings)

    def lookup(self, key: tuple[Any, ...]) -> Prepared | None:
        return self._memo.get(key)

    def known(self, key: tuple[Any, ...]) -> bool:
        return key in self._memo

    @contextmanager
    def recording(
        self, key: tuple[Any, ...], model: str, messages: list[dict[str, Any]], call_id: str, extra_kwargs: dict[str, Any]
    ) -> Iterator[None]:
        """Record what the chat handler is handed while this block runs (in this task's context).

        The preparation is kept (or found not replayable) as soon as the handler is called, before
        the request is sent, so that the calls started right after this one replay it already. A
        call that never reaches the handler (cancelled, or failed while being prepared) leaves
        nothing, and the next call of the combination records again.
        """

        def done(recording: _Recording) -> None:
            if len(self._memo) >= _MAX_ENTRIES:
                self._memo.clear()
            prepared = _replayable(model, recording, messages, call_id, extra_kwargs)
            self._memo[key] = prepared
            if prepared is None:
                log.info("litellm's preparation of %s calls is not replayed; they take its whole path", model)

        token = _recording.set(_Recording(done))
        try:
            yield
        finally:
            _recording.reset(token)

    def call(
        self,
        prepared: Prepared,
        messages: list[dict[str, Any]],
        logging_obj: Any,
        call_id: str,
    ) -> Coroutine[Any, Any, Any]:
        """The handler's coroutine for one call with a recorded preparation."""
        return self._call(prepared, messages, logging_obj, call_id)

    async def _call(self, prepared: Prepared, messages: list[dict[str, Any]], logging_obj: Any, call_id: str) -> Any:
        assert self._complete is not None and self._exception_type is not None
        self.replays += 1
        messages = [dict(m) for m in messages]  # litellm may edit what it is handed; completion() hands it copies
        optional_params = dict(prepared.optional_params)
        litellm_params = dict(prepared.litellm_params)
        for name in prepared.call_id_keys:
            litellm_params[name] = call_id
        # No default choice (a Choices and a Message built to be thrown away): the response's choices replace it.
        model_response = self._model_response(choices=[])
        if prepared.has_usage:
            model_response.usage = self._empty_usage()
        hidden = getattr(model_response, "_hidden_params", None)
        if isinstance(hidden, dict):
            hidden.update(prepared.hidden_params)
        arguments = prepared.arguments
        logging_obj.update_environment_variables(
            model=arguments["model"],
            user=None,
            optional_params=dict(optional_params),
            litellm_params=litellm_params,
            custom_llm_provider=arguments["custom_llm_provider"],
        )
        try:
            pending = self._complete(
                **arguments,
                messages=messages,
                model_response=model_response,
                logging_obj=logging_obj,
                optional_params=optional_params,
                litellm_params=litellm_params,
                headers=None if prepared.headers is None else dict(prepared.headers),
            )
            return await pending
        except Exception as exc:
            # What litellm.acompletion (its exception mapping, which raises) and its wrapper do with a failure.
            try:
                mapped = self._exception_type(
                    model=prepared.model,
                    custom_llm_provider=arguments["custom_llm_provider"],
                    original_exception=exc,
                    completion_kwargs={"model": prepared.model, "messages": messages},
                    extra_kwargs=prepared.extra_kwargs | {"litellm_call_id": call_id, "litellm_logging_obj": logging_obj},
                )
            except Exception as raised:
                mapped = raised
            mapped.num_retries = prepared.extra_kwargs.get("num_retries")  # type: ignore[attr-defined]
            mapped.timeout = arguments["timeout"]  # type: ignore[attr-defined]
            if mapped is exc:
                raise
            raise mapped from exc


def _replayable(
    model: str, recording: _Recording, messages: list[dict[str, Any]], call_id: str, extra_kwargs: dict[str, Any]
) -> Prepared | None:
    arguments = recording.arguments
    if arguments is None:
        return None
    if not set(arguments) <= _KNOWN_ARGUMENTS or not all(name in arguments for name in _PER_CALL):
        return None
    if (
        arguments.get("acompletion") is not True
        or arguments.get("stream")
        or arguments.get("client") is not None
        or arguments.get("shared_session") is not None
        or arguments.get("custom_llm_provider") != "openai"
    ):
        return None
    handed = arguments["messages"]
    if (
        not isinstance(handed, list)
        or len(handed) != len(messages)
        or any(not isinstance(h, dict) or list(h.items()) != list(m.items()) for h, m in zip(handed, messages))
    ):
        return None  # completion() changed the messages (or their key order): not replayable from them
    optional_params, litellm_params, headers = arguments["optional_params"], arguments["litellm_params"], arguments["headers"]
    if not isinstance(optional_params, dict) or not isinstance(litellm_params, dict):
        return None
    if headers is not None and not isinstance(headers, dict):
        return None
    call_id_keys = tuple(k for k, v in litellm_params.items() if v == call_id)
    if "litellm_call_id" not in call_id_keys:
        return None
    shared = {k: v for k, v in arguments.items() if k not in _PER_CALL}
    return Prepared(
        model=model,
        arguments=shared,
        optional_params=optional_params,
        litellm_params=litellm_params,
        headers=headers,
        call_id_keys=call_id_keys,
        hidden_params=recording.hidden_params,
        has_usage=recording.has_usage,
        extra_kwargs=extra_kwargs,
    )


@functools.cache
def _install_recorder() -> tuple[Any, Callable[..., Coroutine[Any, Any, Any]] | None]:
    """Wrap litellm's chat handler so that a call made inside ``recording()`` leaves its arguments there.

    Returns the handler and its unwrapped ``completion`` (None if litellm's shape changed). Outside
    a recording the wrapper only passes the call on.
    """
    main = importlib.import_module("litellm.main")
    handler = getattr(main, "base_llm_http_handler", None)
    original = getattr(handler, "completion", None)
    if handler is None or original is None or not callable(original):
        log.warning("litellm's chat handler changed shape; its request preparation is not replayed")
        return handler, None
    if getattr(original, "meansql_recorder", None) is not None:
        return handler, cast("Callable[..., Coroutine[Any, Any, Any]]", original.meansql_recorder)

    @functools.wraps(original)
    def completion(*args: Any, **kwargs: Any) -> Any:
        recording = _recording.get()
        if recording is not None and recording.arguments is None and not args:
            # Copies of what the handler edits: it pops json_mode and extra_body from optional_params and
            # adds the provider's headers to the headers it is handed (litellm.headers itself, when set).
            recording.arguments = {k: (dict(v) if isinstance(v, dict) and k in _COPIED else v) for k, v in kwargs.items()}
            response = kwargs.get("model_response")
            recording.hidden_params = dict(getattr(response, "_hidden_params", None) or {})
            recording.has_usage = getattr(response, "usage", None) is not None
            recording.done(recording)
        return original(*args, **kwargs)

    completion.meansql_recorder = original  # type: ignore[attr-defined]
    setattr(handler, "completion", completion)  # noqa: B010 - an instance attribute in front of the method
    return handler, cast("Callable[..., Coroutine[Any, Any, Any]]", original)
