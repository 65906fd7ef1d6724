"""Executing semantic operators: DuckDB hands us whole vectors, we judge them.

Each operator becomes a vectorised DuckDB UDF whose first argument is the
query's token, so the UDF finds its query's context (session, notices, cancel
flag, per-query memo). A vector's distinct inputs are judged once each,
concurrently; every attempt is logged and committed before the vector's answers
go back to DuckDB, so no client ever sees an answer whose log row could be lost.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from semantic_ops.answers import parse_boolean
from semantic_ops.errors import ModelCallFailed, ModelNotConfigured, QueryCanceled, SemanticError
from semantic_ops.judges.base import Judge, JudgeRequest, Outcome
from semantic_ops.operators import Operator, Registry
from semantic_ops.prompts import render
from training import retrieval
from training.logs import LogRecord
from training.retrieval import Selection
from training.store import Store

log = logging.getLogger(__name__)

Notice = Callable[[str, str], None]  # (severity, message)

_ARROW_TYPES = {"BOOLEAN": pa.bool_(), "VARCHAR": pa.string()}


@dataclass
class QueryContext:
    """What one statement's semantic calls share."""

    session_id: str
    query_id: str
    notice: Notice
    cancel: threading.Event = field(default_factory=threading.Event)
    memo: dict[str, Any] = field(default_factory=dict)
    selections: dict[tuple[str, str | None], Selection] = field(default_factory=dict)
    error: BaseException | None = None
    calls: int = 0
    unparseable: int = 0


class Executor:
    """Judges the inputs of semantic operators for the queries that need them."""

    def __init__(self, store: Store, registry: Registry, judge: Judge | None, *, default_model: str | None) -> None:
        self.store = store
        self.registry = registry
        self.judge_backend = judge
        self.default_model = default_model
        self._contexts: dict[str, QueryContext] = {}
        self._lock = threading.Lock()

    # -- query lifecycle --------------------------------------------------
    def begin(self, session_id: str, notice: Notice) -> QueryContext:
        ctx = QueryContext(session_id=session_id, query_id=f"q-{uuid.uuid4().hex[:12]}", notice=notice)
        with self._lock:
            self._contexts[ctx.query_id] = ctx
        return ctx

    def end(self, ctx: QueryContext) -> None:
        with self._lock:
            self._contexts.pop(ctx.query_id, None)

    def register_udfs(self, con: Any) -> None:
        """Create one vectorised UDF per operator that has a SQL function."""
        for op in self.registry.by_function.values():
            sig = op.signature()
            con.create_function(
                sig.udf_name,
                self._udf(op),
                ["VARCHAR", *sig.arg_types],
                sig.returns,
                type="arrow",
                null_handling="special",
                side_effects=True,
            )

    def _udf(self, op: Operator) -> Callable[..., pa.Array]:
        out_type = _ARROW_TYPES[op.returns]

        def udf(tokens: pa.Array, *columns: pa.Array) -> pa.Array:
            token = tokens[0].as_py() if len(tokens) else None
            ctx = self._contexts.get(token) if token else None
            if ctx is None:
                raise SemanticError(f"{op.cascade_id} can only be called from a query meansql runs")
            try:
                rows = list(zip(*(c.to_pylist() for c in columns)))
                return pa.array(self.evaluate(ctx, op, rows), type=out_type)
            except BaseException as exc:
                ctx.error = exc
                raise

        return _fixed_arity(udf, len(op.arg_names))

    # -- judging ------------------------------------------------------------
    def model_for(self, op: Operator) -> str:
        model = op.cell.model or self.default_model
        if not model or self.judge_backend is None:
            raise ModelNotConfigured(
                f"no model is configured for {op.cascade_id}",
                hint="set MEANSQL_MODEL (e.g. openai/gpt-4o-mini, with OPENAI_API_KEY) and, for a "
                "self-hosted server, MEANSQL_API_BASE; or put `model:` in meansql.yaml",
            )
        return model

    def evaluate(self, ctx: QueryContext, op: Operator, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Answers for rows of operator arguments; NULL arguments give NULL without a call."""
        model = self.model_for(op)
        names = op.arg_names
        keys: list[str | None] = []
        todo: dict[str, tuple[dict[str, Any], JudgeRequest]] = {}
        for row in rows:
            if any(v is None for v in row):
                keys.append(None)
                continue
            inputs = dict(zip(names, row))
            criterion = _criterion(inputs)
            selection = self._examples(ctx, op, criterion)
            request = JudgeRequest(
                model=model,
                messages=tuple(render(op.cell, inputs, selection.examples)),
                temperature=op.cell.temperature,
                max_tokens=op.cell.max_tokens,
            )
            key = json.dumps([op.cascade_id, request.as_json()], sort_keys=True)
            keys.append(key)
            if key not in ctx.memo and key not in todo:
                todo[key] = (inputs, request)
        if todo:
            self._judge(ctx, op, todo)
        return [None if k is None else ctx.memo.get(k) for k in keys]

    def _examples(self, ctx: QueryContext, op: Operator, criterion: str | None) -> Selection:
        cached = ctx.selections.get((op.cascade_id, criterion))
        if cached is not None:
            return cached
        cell = op.cell
        if not cell.use_training or cell.training_limit == 0:
            selection = Selection((), cell.training_strategy, 0, 0)
        else:
            cur = self.store.cursor()
            try:
                selection = retrieval.select_examples(
                    cur,
                    cascade_id=op.cascade_id,
                    cell_name=cell.name,
                    strategy=cell.training_strategy,
                    limit=cell.training_limit,
                    min_confidence=cell.training_min_confidence,
                    verified_only=cell.training_verified_only,
                    criterion=criterion,
                )
            finally:
                cur.close()
            ctx.notice("NOTICE", _injection_notice(cell.name, selection, criterion))
        ctx.selections[(op.cascade_id, criterion)] = selection
        return selection

    def _judge(self, ctx: QueryContext, op: Operator, todo: Mapping[str, tuple[dict[str, Any], JudgeRequest]]) -> None:
        if ctx.cancel.is_set():
            raise QueryCanceled("canceling statement due to user request")
        assert self.judge_backend is not None
        keys = list(todo)
        requests = [todo[k][1] for k in keys]
        try:
            outcomes = self.judge_backend.judge(requests, ctx.cancel)
        except TimeoutError:
            outcomes = None
        ctx.calls += len(requests)
        if outcomes is None:
            raise QueryCanceled("canceling statement due to user request")
        records: list[LogRecord] = []
        failed: list[tuple[str, Outcome]] = []
        for key, outcome in zip(keys, outcomes):
            inputs, request = todo[key]
            answer, parse_error = self._answer(op, outcome)
            for attempt in outcome.attempts:
                last = attempt is outcome.attempts[-1]
                records.append(LogRecord(
                    session_id=ctx.session_id, query_id=ctx.query_id,
                    cascade_id=op.cascade_id, cell_name=op.cell.name, model=request.model,
                    request=request.as_json(), user_input=_text(inputs), criterion=_criterion(inputs),
                    inputs=inputs, assistant_output=attempt.text,
                    answer=answer if last and isinstance(answer, bool) else None,
                    prompt_tokens=attempt.prompt_tokens, completion_tokens=attempt.completion_tokens,
                    cost=attempt.cost, latency_ms=attempt.latency_ms, attempt=attempt.number,
                    error=attempt.error or (parse_error if last else None),
                ))
            if outcome.error is not None:
                failed.append((key, outcome))
            elif parse_error is not None:
                ctx.unparseable += 1
                ctx.memo[key] = None
            else:
                ctx.memo[key] = answer
        # Durable before anyone sees an answer.
        self.store.append_logs([r.row() for r in records]).result()
        if failed:
            if any("cancelled" in (o.error or "") for _, o in failed) and ctx.cancel.is_set():
                raise QueryCanceled("canceling statement due to user request")
            _, outcome = failed[0]
            raise ModelCallFailed(
                f"{op.cascade_id}: {len(failed)} model call(s) failed after "
                f"{len(outcome.attempts)} attempt(s); first error: {outcome.error}",
                hint="every attempt is in unified_logs (column error); check the model's address and key",
            )

    @staticmethod
    def _answer(op: Operator, outcome: Outcome) -> tuple[bool | str | None, str | None]:
        text = outcome.text
        if outcome.error is not None or text is None:
            return None, None
        if op.returns == "BOOLEAN":
            value = parse_boolean(text)
            if value is None:
                return None, f"unparseable answer: {text[:200]!r}"
            return value, None
        return text.strip(), None

    def run_operator(self, op: Operator, inputs: Mapping[str, Any], ctx: QueryContext) -> Any:
        """Judge one input of any operator (the `meansql run` command)."""
        missing = [n for n in op.arg_names if n not in inputs]
        if missing:
            raise SemanticError(f"{op.cascade_id}: input is missing {', '.join(missing)}")
        row = tuple(inputs[n] for n in op.arg_names)
        return self.evaluate(ctx, op, [row])[0]


def _fixed_arity(fn: Callable[..., pa.Array], n: int) -> Callable[..., pa.Array]:
    """DuckDB counts a UDF's parameters, so give it one per SQL argument (plus the token)."""
    wrappers: dict[int, Callable[..., pa.Array]] = {
        1: lambda t, a: fn(t, a),
        2: lambda t, a, b: fn(t, a, b),
        3: lambda t, a, b, c: fn(t, a, b, c),
        4: lambda t, a, b, c, d: fn(t, a, b, c, d),
        5: lambda t, a, b, c, d, e: fn(t, a, b, c, d, e),
        6: lambda t, a, b, c, d, e, f: fn(t, a, b, c, d, e, f),
    }
    if n not in wrappers:
        raise SemanticError(f"an operator may take 1 to {len(wrappers)} arguments, not {n}")
    return wrappers[n]


def _text(inputs: Mapping[str, Any]) -> str | None:
    value = inputs.get("text", next(iter(inputs.values()), None))
    return None if value is None else str(value)


def _criterion(inputs: Mapping[str, Any]) -> str | None:
    """The operator's non-text arguments, as one string (the criterion of MEANS)."""
    rest = {k: v for k, v in inputs.items() if k != "text"}
    if not rest:
        return None
    if list(rest) == ["criterion"]:
        return str(rest["criterion"])
    return json.dumps(rest, sort_keys=True, default=str)


def _injection_notice(cell_name: str, selection: Selection, criterion: str | None) -> str:
    n = len(selection.examples)
    if n == 0:
        return f"No training examples available yet for {cell_name}"
    text = f"Injected {n} training examples ({selection.strategy} strategy)"
    if selection.other_criteria:
        text += (
            f": {selection.same_criterion} for {criterion!r}, "
            f"{selection.other_criteria} from other criteria"
        )
    return text
