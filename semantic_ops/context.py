"""What one statement's semantic calls share: options, memo, counters, the cancel flag."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from semantic_ops.errors import QueryCanceled, SemanticError
from semantic_ops.operators import Operator
from training.retrieval import Selection

Notice = Callable[[str, str], None]  # (severity, message)


@dataclass
class Options:
    """Per-query knobs, from the session's SET meansql.* values over the server's defaults."""

    cache: bool = True
    on_error: str = "error"  # or "null"
    max_calls: int = 0  # 0: no limit

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], defaults: Options) -> Options:
        def flag(value: str) -> bool:
            return value.strip().lower() not in ("off", "false", "0", "no")

        opts = Options(defaults.cache, defaults.on_error, defaults.max_calls)
        if "meansql.cache" in settings:
            opts.cache = flag(settings["meansql.cache"])
        if "meansql.on_error" in settings:
            value = settings["meansql.on_error"].strip().lower()
            if value not in ("error", "null"):
                raise SemanticError("meansql.on_error must be 'error' or 'null'", hint="SET meansql.on_error = 'null'")
            opts.on_error = value
        if "meansql.max_calls" in settings:
            try:
                opts.max_calls = int(settings["meansql.max_calls"])
            except ValueError as exc:
                raise SemanticError("meansql.max_calls must be a whole number (0: no limit)") from exc
        return opts


@dataclass
class OpStats:
    judged: int = 0
    cache_hits: int = 0
    failed: int = 0
    unparseable: int = 0
    local: int = 0  # answered by the local judge
    proxy: int = 0  # answered by the local judge as a cascade's proxy


@dataclass
class QueryContext:
    """What one statement's semantic calls share."""

    session_id: str
    query_id: str
    notice: Notice
    options: Options = field(default_factory=Options)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "user request"
    memo: dict[str, Any] = field(default_factory=dict)
    selections: dict[tuple[str, str | None], Selection] = field(default_factory=dict)
    example_pools: dict[tuple[str, str | None], tuple[list[Any], Any, str | None]] = field(default_factory=dict)  # semantic strategy
    error: BaseException | None = None
    calls: int = 0  # model requests asked for (distinct prompts, batches count once)
    lookup_only: bool = False  # after the planned stages: values not judged yet are not needed
    stats: dict[str, OpStats] = field(default_factory=dict)
    arg_keys: dict[str, dict[tuple[Any, ...], str | None]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def op_stats(self, op: Operator) -> OpStats:
        return self.stats.setdefault(op.cascade_id, OpStats())

    def canceled(self) -> QueryCanceled:
        return QueryCanceled(f"canceling statement due to {self.cancel_reason}")
