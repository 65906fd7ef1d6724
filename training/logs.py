"""unified_logs rows: one per model call attempt (cache hits included, marked)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from training import schema


def new_trace_id() -> str:
    return str(uuid.uuid4())


@dataclass
class LogRecord:
    """What one model call (or one cache hit) leaves behind."""

    session_id: str
    query_id: str
    cascade_id: str
    cell_name: str
    model: str
    request: dict[str, Any]
    user_input: str | None
    criterion: str | None
    inputs: dict[str, Any]
    assistant_output: str | None = None
    answer: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    latency_ms: float | None = None
    cache_hit: bool = False
    attempt: int = 1
    error: str | None = None
    role: str = "assistant"
    call_id: str | None = None
    batch_size: int | None = None
    trace_id: str = field(default_factory=new_trace_id)
    timestamp: dt.datetime = field(default_factory=dt.datetime.now)

    def row(self) -> tuple[Any, ...]:
        """The record as a tuple in schema.LOG_FIELDS order."""
        content = None
        if self.assistant_output is not None:
            content = json.dumps({"role": "assistant", "content": self.assistant_output})
        values = {
            "trace_id": self.trace_id,
            "session_id": self.session_id,
            "query_id": self.query_id,
            "cascade_id": self.cascade_id,
            "cell_name": self.cell_name,
            "role": self.role,
            "model": self.model,
            "full_request_json": json.dumps(self.request),
            "content_json": content,
            "user_input": self.user_input,
            "criterion": self.criterion,
            "input_json": json.dumps(self.inputs),
            "assistant_output": self.assistant_output,
            "answer": self.answer,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "latency_ms": self.latency_ms,
            "cache_hit": self.cache_hit,
            "attempt": self.attempt,
            "error": self.error,
            "timestamp": self.timestamp,
            "call_id": self.call_id,
            "batch_size": self.batch_size,
        }
        return tuple(values[name] for name in schema.LOG_FIELDS)
