"""The Judge protocol: a list of requests in, one outcome per request out."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class JudgeRequest:
    """One model call to make: the model and the rendered messages.

    The executor also sets what the call is about (operator, cell, inputs, criterion) for
    judges that decide from the values rather than from a prompt, such as the local judge;
    these are not part of the request body (nor of the cache key).
    """

    model: str
    messages: tuple[dict[str, str], ...]
    temperature: float | None = 0.0
    max_tokens: int | None = None
    inputs: Mapping[str, Any] | None = field(default=None, compare=False)
    criterion: str | None = field(default=None, compare=False)
    cascade_id: str | None = field(default=None, compare=False)
    cell_name: str | None = field(default=None, compare=False)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": list(self.messages)}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body


@dataclass
class Attempt:
    """One try at a call, successful or not; every attempt becomes a log row."""

    number: int
    text: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    latency_ms: float = 0.0
    status: int | None = None  # HTTP status when known (200 for an answer)
    throttled: bool = False    # the provider said slow down (429 or Retry-After)
    confidence: float | None = None  # how sure the judge is, 0 to 1, when it can say (the local judge)


@dataclass
class Outcome:
    """All attempts of one request; the last one holds the answer or the final error."""

    attempts: list[Attempt] = field(default_factory=list)

    @property
    def text(self) -> str | None:
        return self.attempts[-1].text if self.attempts else None

    @property
    def error(self) -> str | None:
        return self.attempts[-1].error if self.attempts else "not attempted"


class Judge(Protocol):
    """Something that answers model requests (litellm, the local judge...)."""

    name: str

    def judge(self, requests: list[JudgeRequest], cancel: threading.Event,
              progress: Callable[[int], None] | None = None) -> list[Outcome]:
        """Answer every request; never raises for a single failed call (see Outcome.error).

        Once ``cancel`` is set, returns promptly: finished outcomes as they are, unfinished ones
        ending in an attempt whose error is "cancelled". ``progress``, if given, gets the number
        of requests finished so far now and then, and once at the end.
        """
        ...

    def close(self) -> None:
        ...
