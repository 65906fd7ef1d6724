"""Executing semantic operators: each distinct prompt is judged once, cached, logged.

Two ways in. For the SELECT shapes the planner understands, ``prepare`` judges
every value a query needs before DuckDB runs it (cheap predicates first, the
budget known before the first call, LIMIT answered in waves). Otherwise DuckDB
hands whole vectors to the operator's UDF, whose first argument is the query's
token. Either way a value is judged once per query (memo), at most once ever
(the persistent cache, keyed by operator, model and the full rendered prompt),
and every attempt is logged and committed before any answer is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from semantic_ops import batching
from semantic_ops.answers import parse_boolean
from semantic_ops.context import Notice, Options, QueryContext
from semantic_ops.errors import BudgetExceeded, ModelCallFailed, ModelNotConfigured, SemanticError
from semantic_ops.functions import VectorSearch
from semantic_ops.judges.base import Attempt, Judge, JudgeRequest, Outcome
from semantic_ops.judges.local import LocalJudge, is_local
from semantic_ops.operators import Operator, Registry
from semantic_ops.planner import Stage
from semantic_ops.prompts import render
from training import cache, retrieval
from training.embeddings import Embedder
from training.logs import LogRecord
from training.retrieval import Example, Selection
from training.store import Store
from training.stores import DuckDBStore, TrainingStore, claim_unanswered, wait_for_answers
from training.vectors import VectorIndexes, fingerprint

log = logging.getLogger(__name__)

NEAREST_POOL = 64  # examples an HNSW search returns for the semantic strategy to choose from
_ARROW_TYPES = {"BOOLEAN": pa.bool_(), "VARCHAR": pa.string()}


@dataclass
class _Item:
    key: str
    inputs: dict[str, Any]
    request: JudgeRequest


class Executor:
    """Judges the inputs of semantic operators for the queries that need them."""

    def __init__(self, store: Store, registry: Registry, judge: Judge | None, *, default_model: str | None,
                 defaults: Options | None = None, local: LocalJudge | None = None,
                 embedder: Embedder | None = None, vectors: VectorIndexes | None = None,
                 training_store: TrainingStore | None = None) -> None:
        self.store = store
        # Logs, cache, examples: the DuckDB file, or a store that many processes share.
        self.training_store: TrainingStore = training_store or DuckDBStore(store)
        self.registry = registry
        self.judge_backend = judge
        self.local = local  # answers when no model is configured, `model: local`, and a cascade's confident rows
        self.embedder = embedder or (local.embedder if local is not None else None)  # the semantic strategy's
        self.vectors = vectors  # HNSW indexes for large searches (None: always exact)
        self.vector_search = VectorSearch(store, self.embedder, vectors) if self.embedder else None  # VECTOR_SEARCH's
        self.default_model = default_model
        self.defaults = defaults or Options()
        self._contexts: dict[str, QueryContext] = {}
        self._lock = threading.Lock()
        self._by_udf = {op.signature().udf_name: op for op in registry.by_function.values()}

    # -- query lifecycle --------------------------------------------------
    def begin(self, session_id: str, notice: Notice, settings: Mapping[str, str] | None = None) -> QueryContext:
        ctx = QueryContext(session_id=session_id, query_id=f"q-{uuid.uuid4().hex[:12]}", notice=notice,
                           options=Options.from_settings(settings or {}, self.defaults))
        with self._lock:
            self._contexts[ctx.query_id] = ctx
        return ctx

    def end(self, ctx: QueryContext) -> None:
        """Forget the query; report cache hits and NULLed rows (NOTICE and a log row per operator)."""
        with self._lock:
            self._contexts.pop(ctx.query_id, None)
        records = []
        for cascade_id, st in ctx.stats.items():
            if st.local:
                model = self.local.model if self.local is not None else "local"
                ctx.notice("NOTICE", f"{cascade_id}: {st.local} value(s) answered by the local judge ({model}, no LLM call)")
            if st.proxy:
                ctx.notice("NOTICE", f"{cascade_id}: cascade: {st.proxy} value(s) answered by the local judge, "
                                     f"{st.judged} by the model")
            if st.cache_hits:
                ctx.notice("NOTICE", f"{cascade_id}: {st.cache_hits} answer(s) from cache, {st.judged} judged by the model")
                records.append(LogRecord(
                    session_id=ctx.session_id, query_id=ctx.query_id, cascade_id=cascade_id, cell_name="",
                    model="", request={}, user_input=None, criterion=None, inputs={"cache_hits": st.cache_hits},
                    role="cache", cache_hit=True, attempt=0,
                ))
            if st.unparseable:
                ctx.notice("WARNING", f"{st.unparseable} answer(s) could not be read as true/false and are NULL; "
                                      "see unified_logs.error")
            if st.failed:
                ctx.notice("WARNING", f"{st.failed} value(s) could not be judged (model errors) and are NULL "
                                      "because meansql.on_error = 'null'; see unified_logs.error")
        if records:
            self.training_store.commit_calls([r.row() for r in records], [])

    def register_udfs(self, con: Any) -> None:
        """Create one vectorised UDF per operator that has a SQL function."""
        for op in self.registry.by_function.values():
            sig = op.signature()
            con.create_function(sig.udf_name, self._udf(op), ["VARCHAR", *sig.arg_types], sig.returns,
                                type="arrow", null_handling="special", side_effects=True)

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

    # -- planning ahead -------------------------------------------------------
    def prepare(self, ctx: QueryContext, stages: Sequence[Stage], run_sql: Callable[[str], list[tuple[Any, ...]]]) -> None:
        """Judge every value the planned stages need, before the query itself runs.

        The stages cover every semantic call of the statement (the planner plans all or none), so once
        they are judged the query needs no other value: DuckDB may still call the operator on rows a
        plain predicate drops (it orders filters as it likes), and those get no model call.
        """
        for stage in stages:
            op = self._by_udf[stage.udf_name]
            # A stage filters by the semantic conjuncts judged before it; DuckDB may call them on rows
            # its plain predicates drop, whose values need no answer.
            ctx.lookup_only = True
            try:
                rows = run_sql(stage.sql)
            finally:
                ctx.lookup_only = False
            self._warm(op, [row[:stage.n_args] for row in rows])
            counts: dict[str, int] = {}
            items: dict[str, _Item] = {}
            keys = ctx.arg_keys.setdefault(op.cascade_id, {})  # so the query's UDF calls render nothing again
            for row in rows:
                args, n = row[:stage.n_args], int(row[stage.n_args])
                item = self._item(ctx, op, args)
                keys[args] = item.key if item is not None else None
                if item is None:
                    continue
                counts[item.key] = counts.get(item.key, 0) + n
                items.setdefault(item.key, item)
            if stage.stop_after is None:
                self._ensure(ctx, op, list(items.values()))
                continue
            self._from_cache(ctx, op, [i for i in items.values() if i.key not in ctx.memo])
            matched = sum(n for k, n in counts.items() if ctx.memo.get(k) is stage.match)
            remaining = [i for i in items.values() if i.key not in ctx.memo]
            while matched < stage.stop_after and remaining:
                width = max(1, int(getattr(self.judge_backend, "current_concurrency", 0)
                                   or getattr(self.judge_backend, "max_concurrency", 64)))
                batch = max(1, op.cell.batch_size)
                wave, remaining = remaining[:width * batch], remaining[width * batch:]
                self._ensure(ctx, op, wave)
                matched += sum(counts[i.key] for i in wave if ctx.memo.get(i.key) is stage.match)
        if stages:
            ctx.lookup_only = True

    # -- judging ------------------------------------------------------------
    def model_for(self, op: Operator) -> str:
        model = op.cell.model or self.default_model
        if (model is None or is_local(model)) and self.local is not None:
            if op.returns != "BOOLEAN":
                raise ModelNotConfigured(
                    f"no model is configured for {op.cascade_id}, and the local judge answers only true/false operators",
                    hint="set MEANSQL_MODEL (e.g. openai/gpt-4o-mini, with OPENAI_API_KEY) and, for a "
                    "self-hosted server, MEANSQL_API_BASE; or put `model:` in meansql.yaml",
                )
            return self.local.model
        if not model or self.judge_backend is None:
            raise ModelNotConfigured(
                f"no model is configured for {op.cascade_id}",
                hint="set MEANSQL_MODEL (e.g. openai/gpt-4o-mini, with OPENAI_API_KEY) and, for a "
                "self-hosted server, MEANSQL_API_BASE; or put `model:` in meansql.yaml",
            )
        return model

    def _item(self, ctx: QueryContext, op: Operator, args: Sequence[Any]) -> _Item | None:
        if any(v is None for v in args):
            return None
        inputs = dict(zip(op.arg_names, args))
        selection = self._examples(ctx, op, _criterion(inputs), _text(inputs))
        request = JudgeRequest(model=self.model_for(op), messages=tuple(render(op.cell, inputs, selection.examples)),
                               temperature=op.cell.temperature, max_tokens=op.cell.max_tokens, inputs=inputs,
                               criterion=_criterion(inputs), cascade_id=op.cascade_id, cell_name=op.cell.name)
        body = json.dumps([op.cascade_id, request.as_json()], sort_keys=True)
        return _Item(hashlib.sha256(body.encode()).hexdigest(), inputs, request)

    def evaluate(self, ctx: QueryContext, op: Operator, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Answers for rows of operator arguments; NULL arguments give NULL without a call."""
        keys = ctx.arg_keys.setdefault(op.cascade_id, {})
        todo: dict[str, _Item] = {}
        self._warm(op, [r for r in dict.fromkeys(rows) if r not in keys])
        for row in dict.fromkeys(rows):  # each distinct argument tuple is rendered once per query
            if row not in keys:
                item = self._item(ctx, op, row)
                keys[row] = item.key if item is not None else None
                if item is not None:
                    todo[item.key] = item
            key = keys[row]
            if key is not None and key not in ctx.memo and key not in todo:
                again = self._item(ctx, op, row)
                if again is not None:
                    todo[key] = again
        if todo:
            self._ensure(ctx, op, list(todo.values()))
        answers = []
        for row in rows:
            key = keys[row]
            answers.append(None if key is None else ctx.memo.get(key))
        return answers

    def _from_cache(self, ctx: QueryContext, op: Operator, items: Sequence[_Item]) -> list[_Item]:
        """Fill the memo from the persistent cache; returns the items still unanswered."""
        if not items or not ctx.options.cache:
            return list(items)
        hits = self.training_store.cache_lookup([i.key for i in items])
        ctx.memo.update(hits)
        ctx.op_stats(op).cache_hits += len(hits)
        return [i for i in items if i.key not in hits]

    def _ensure(self, ctx: QueryContext, op: Operator, items: Sequence[_Item]) -> None:
        """Make sure every item has an answer in the memo (cache, then the model)."""
        local = [i for i in items if i.key not in ctx.memo and is_local(i.request.model)]
        if local:
            # The local judge costs nothing and its answers follow the annotations, so they are not cached.
            if ctx.cancel.is_set():
                raise ctx.canceled()
            self._judge(ctx, op, local)
        pending = self._from_cache(ctx, op, [i for i in items if i.key not in ctx.memo])
        if not pending:
            return
        if ctx.lookup_only:
            for i in pending:
                ctx.memo[i.key] = None  # past a LIMIT's last wave: not needed
            return
        if ctx.cancel.is_set():
            raise ctx.canceled()
        if op.cell.cascade is not None and self.local is not None and op.returns == "BOOLEAN":
            pending = self._cascade(ctx, op, pending)
            if not pending:
                return
        batch = max(1, op.cell.batch_size)
        needed = ctx.calls + -(-len(pending) // batch)
        if ctx.options.max_calls and needed > ctx.options.max_calls:
            raise BudgetExceeded(
                f"{op.cascade_id} needs at least {needed} model calls for this query, "
                f"more than meansql.max_calls = {ctx.options.max_calls}; no call was made for them",
                hint="raise the limit (SET meansql.max_calls = ...), filter more rows first, or add LIMIT",
            )
        if not ctx.options.cache:  # every value is judged afresh: nothing to share or wait for
            self._judge_all(ctx, op, pending, batch)
            return
        # Values another query (here or in another process) is judging right now are waited for, not paid twice.
        late, mine = claim_unanswered(self.training_store, [i.key for i in pending], ctx.query_id)
        ctx.memo.update(late)
        ctx.op_stats(op).cache_hits += len(late)
        pending = [i for i in pending if i.key not in late]
        waiting = [i for i in pending if i.key not in mine]
        todo = [i for i in pending if i.key in mine]
        try:
            while todo or waiting:
                self._judge_all(ctx, op, todo, batch)
                if not waiting:
                    break
                answers, got = wait_for_answers(self.training_store, [i.key for i in waiting], ctx.query_id,
                                                stop=ctx.cancel)
                ctx.memo.update(answers)
                ctx.op_stats(op).cache_hits += len(answers)
                if ctx.cancel.is_set():
                    raise ctx.canceled()
                todo = [i for i in waiting if i.key in got]
                waiting = []
        except BaseException:
            self.training_store.release([i.key for i in pending], ctx.query_id)
            raise

    def _judge_all(self, ctx: QueryContext, op: Operator, items: Sequence[_Item], batch: int) -> None:
        """Judge items with the model, `batch` to a call when the operator asks for it."""
        if batch > 1 and len(items) > 1 and op.returns == "BOOLEAN":
            items = self._judge_batched(ctx, op, items, batch)
        if items:
            self._judge(ctx, op, items)

    def _progress(self, ctx: QueryContext, op: Operator, total: int) -> Callable[[int], None]:
        """Progress NOTICEs for judging that takes more than a second (and then its last count too)."""
        started = time.monotonic()
        sent = False

        def report(done: int) -> None:
            nonlocal sent
            if time.monotonic() - started > 1.0 and (done < total or sent):
                sent = True
                st = ctx.op_stats(op)
                ctx.notice("NOTICE", f"{op.cascade_id}: {done}/{total} distinct values judged, {st.cache_hits} from cache")
        return report

    def _call(self, ctx: QueryContext, op: Operator, requests: list[JudgeRequest]) -> list[Outcome]:
        backend: Judge | None
        if requests and is_local(requests[0].model):
            backend = self.local
        else:
            backend = self.judge_backend
            ctx.calls += len(requests)
        assert backend is not None
        try:
            return backend.judge(requests, ctx.cancel, progress=self._progress(ctx, op, len(requests)))
        except (TimeoutError, InterruptedError) as exc:
            raise ctx.canceled() from exc

    def _judge(self, ctx: QueryContext, op: Operator, items: Sequence[_Item]) -> None:
        outcomes = self._call(ctx, op, [i.request for i in items])
        records: list[LogRecord] = []
        cached: list[tuple[str, str, str, Any, str]] = []
        failed: list[Outcome] = []
        st = ctx.op_stats(op)
        for item, outcome in zip(items, outcomes):
            answer, parse_error = _answer(op, outcome)
            trace = ""
            for attempt in outcome.attempts:
                last = attempt is outcome.attempts[-1]
                rec = _record(ctx, op, item.request, item.inputs, attempt,
                              answer=answer if last and isinstance(answer, bool) else None,
                              error=attempt.error or (parse_error if last else None))
                rec.call_id = rec.trace_id
                records.append(rec)
                trace = rec.trace_id
            if outcome.error is not None:
                failed.append(outcome)
            elif parse_error is not None:
                st.unparseable += 1
                ctx.memo[item.key] = None
            elif is_local(item.request.model):
                st.local += 1
                ctx.memo[item.key] = answer
            else:
                st.judged += 1
                ctx.memo[item.key] = answer
                cached.append((item.key, op.cascade_id, item.request.model, answer, trace))
        self._commit(records, cached, owner=ctx.query_id, release=[i.key for i in items])
        self._settle(ctx, op, [i for i, o in zip(items, outcomes) if o.error is not None], failed)

    def min_confidence(self, op: Operator, criterion: str | None) -> float:
        """The cascade's threshold: calibrated for the operator (and criterion) if it was, else the YAML's."""
        assert op.cell.cascade is not None
        found = self.training_store.calibration(op.cascade_id, criterion)
        return found if found is not None else op.cell.cascade.min_confidence

    def _cascade(self, ctx: QueryContext, op: Operator, items: Sequence[_Item]) -> list[_Item]:
        """The local judge answers the items it is confident about; returns the rest, for the model."""
        assert self.local is not None
        requests = [replace(i.request, model=self.local.model) for i in items]
        outcomes = self._call(ctx, op, requests)
        thresholds: dict[str | None, float] = {}
        records: list[LogRecord] = []
        rest: list[_Item] = []
        st = ctx.op_stats(op)
        for item, request, outcome in zip(items, requests, outcomes):
            answer, _ = _answer(op, outcome)
            confidence = outcome.attempts[-1].confidence if outcome.attempts else None
            criterion = request.criterion
            if criterion not in thresholds:
                thresholds[criterion] = self.min_confidence(op, criterion)
            if outcome.error is not None or not isinstance(answer, bool) or confidence is None \
                    or confidence < thresholds[criterion]:
                rest.append(item)
                continue
            records.append(_record(ctx, op, request, item.inputs, outcome.attempts[-1], answer=answer))
            ctx.memo[item.key] = answer
            st.proxy += 1
        self._commit(records, [])
        return rest

    def _judge_batched(self, ctx: QueryContext, op: Operator, items: Sequence[_Item], size: int) -> list[_Item]:
        """Judge items N to a prompt; returns the items whose batch answer did not fit (judged singly next)."""
        chunks = [list(items[i:i + size]) for i in range(0, len(items), size)]
        if len(chunks[-1]) == 1:
            single = chunks.pop()  # a batch of one is just a call
            if not chunks:
                return single
        else:
            single = []
        model = self.model_for(op)
        requests = [batching.request(op, model, [c.inputs for c in chunk]) for chunk in chunks]
        outcomes = self._call(ctx, op, requests)
        records: list[LogRecord] = []
        cached: list[tuple[str, str, str, Any, str]] = []
        retry: list[_Item] = []
        failed: list[Outcome] = []
        failed_items: list[_Item] = []
        st = ctx.op_stats(op)
        for chunk, request, outcome in zip(chunks, requests, outcomes):
            call_id = str(uuid.uuid4())
            answers = batching.parse(outcome.text, len(chunk)) if outcome.error is None else None
            for attempt in outcome.attempts[:-1] if answers is not None else outcome.attempts:
                records.append(_record(
                    ctx, op, request, None, attempt, inputs={"items": len(chunk)}, call_id=call_id,
                    batch_size=len(chunk), error=attempt.error or ("batch answer did not match its items; judged one by one"
                                                                   if attempt is outcome.attempts[-1] else None),
                ))
            if answers is None:
                if outcome.error is None:
                    retry.extend(chunk)  # the model answered, but not in the expected shape
                else:
                    failed.append(outcome)
                    failed_items.extend(chunk)
                continue
            last = outcome.attempts[-1]
            for item, value in zip(chunk, answers):
                rec = _record(ctx, op, request, item.inputs, last, assistant_output="true" if value else "false",
                              answer=value, cost=(last.cost / len(chunk)) if last.cost is not None else None,
                              call_id=call_id, batch_size=len(chunk))
                records.append(rec)
                st.judged += 1
                ctx.memo[item.key] = value
                cached.append((item.key, op.cascade_id, model, value, rec.trace_id))
        self._commit(records, cached, owner=ctx.query_id,
                     release=[c[0] for c in cached] + [i.key for i in failed_items])
        self._settle(ctx, op, failed_items, failed)
        return retry + single

    def _commit(self, records: list[LogRecord], cached: list[tuple[str, str, str, Any, str]], *,
                owner: str | None = None, release: Sequence[str] = ()) -> None:
        """Log rows and cache entries, durable before anyone sees an answer; the claims on `release` end with them."""
        self.training_store.commit_calls([r.row() for r in records], cache.rows(cached), owner=owner, release=release)

    def _settle(self, ctx: QueryContext, op: Operator, items: Sequence[_Item], failed: list[Outcome]) -> None:
        """After a round of calls: stop on cancel, then fail or NULL the items whose calls failed."""
        if ctx.cancel.is_set():
            raise ctx.canceled()
        if not failed:
            return
        if ctx.options.on_error == "null":
            for item in items:
                ctx.memo[item.key] = None
            ctx.op_stats(op).failed += len(items)
            return
        raise _failure(op, len(failed), failed[0])

    def _warm(self, op: Operator, rows: Sequence[Sequence[Any]]) -> None:
        """Embed a batch of inputs at once before the semantic strategy asks for them one by one."""
        if op.cell.training_strategy == "semantic" and op.cell.use_training and self.embedder is not None:
            texts = [_text(dict(zip(op.arg_names, r))) for r in rows]
            self.embedder.encode([t for t in dict.fromkeys(texts) if t is not None])

    def _semantic_examples(self, ctx: QueryContext, op: Operator, criterion: str | None, text: str | None) -> Selection:
        """The examples nearest to this input (balanced true/false for a boolean operator)."""
        cell = op.cell
        if self.embedder is None:
            raise SemanticError(f"{op.cascade_id}: training_strategy semantic needs an embedding model")
        pool = ctx.example_pools.get((op.cascade_id, criterion))
        first = pool is None
        if pool is None:
            candidates = self.training_store.example_candidates(
                cascade_id=op.cascade_id, cell_name=cell.name,
                min_confidence=cell.training_min_confidence, verified_only=cell.training_verified_only)
            vectors = self.embedder.encode([e.input for e in candidates])
            table = None
            if self.vectors is not None and self.vectors.wanted(len(candidates)):
                key = f"examples:{op.cascade_id}:{cell.name}:{self.embedder.name}"
                table = self.vectors.ensure(key, fingerprint(e.trace_id for e in candidates), len(candidates),
                                            lambda: (np.arange(len(candidates), dtype=np.int64), vectors))
            pool = (candidates, vectors, table)
            ctx.example_pools[(op.cascade_id, criterion)] = pool
        candidates, vectors, table = pool
        query = self.embedder.encode_one(text or "")
        if table is not None and self.vectors is not None:
            # The nearest few from the index; enough of them that both answers and the criterion are represented.
            hits = self.vectors.search(table, query, max(NEAREST_POOL, 8 * cell.training_limit))
            candidates = [candidates[i] for i, _ in hits]
            sims = [s for _, s in hits]
        else:
            sims = (vectors @ query).tolist() if candidates else []

        def label(e: Example) -> bool | None:
            return parse_boolean(e.output)

        selection = retrieval.nearest(candidates, sims, limit=cell.training_limit, criterion=criterion,
                                      label=label if op.returns == "BOOLEAN" else None)
        if first:
            ctx.notice("NOTICE", _injection_notice(cell.name, selection, criterion))
        return selection

    def _examples(self, ctx: QueryContext, op: Operator, criterion: str | None, text: str | None = None) -> Selection:
        if op.cell.training_strategy == "semantic" and op.cell.use_training and op.cell.training_limit:
            return self._semantic_examples(ctx, op, criterion, text)
        cached = ctx.selections.get((op.cascade_id, criterion))
        if cached is not None:
            return cached
        cell = op.cell
        if not cell.use_training or cell.training_limit == 0:
            selection = Selection((), cell.training_strategy, 0, 0)
        else:
            selection = self.training_store.select_examples(
                cascade_id=op.cascade_id, cell_name=cell.name, strategy=cell.training_strategy,
                limit=cell.training_limit, min_confidence=cell.training_min_confidence,
                verified_only=cell.training_verified_only, criterion=criterion,
                source=cell.training_source, min_quality=cell.training_min_quality,
            )
            ctx.notice("NOTICE", _injection_notice(cell.name, selection, criterion))
        ctx.selections[(op.cascade_id, criterion)] = selection
        return selection

    def run_operator(self, op: Operator, inputs: Mapping[str, Any], ctx: QueryContext) -> Any:
        """Judge one input of any operator (the `meansql run` command)."""
        missing = [n for n in op.arg_names if n not in inputs]
        if missing:
            raise SemanticError(f"{op.cascade_id}: input is missing {', '.join(missing)}")
        row = tuple(inputs[n] for n in op.arg_names)
        return self.evaluate(ctx, op, [row])[0]


def _record(ctx: QueryContext, op: Operator, request: JudgeRequest, item_inputs: Mapping[str, Any] | None,
            attempt: Attempt, **fields: Any) -> LogRecord:
    """The unified_logs row of one attempt (or one item of a batched call)."""
    rec = LogRecord(
        session_id=ctx.session_id, query_id=ctx.query_id, cascade_id=op.cascade_id, cell_name=op.cell.name,
        model=request.model, request=request.as_json(),
        user_input=_text(item_inputs) if item_inputs is not None else None,
        criterion=_criterion(item_inputs) if item_inputs is not None else None, inputs=dict(item_inputs or {}),
        assistant_output=attempt.text, prompt_tokens=attempt.prompt_tokens,
        completion_tokens=attempt.completion_tokens, cost=attempt.cost, latency_ms=attempt.latency_ms,
        attempt=attempt.number, error=attempt.error,
    )
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


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


def _failure(op: Operator, n: int, outcome: Outcome) -> ModelCallFailed:
    return ModelCallFailed(
        f"{op.cascade_id}: {n} model call(s) failed after {len(outcome.attempts)} attempt(s); first error: {outcome.error}",
        hint="every attempt is in unified_logs (column error); check the model's address and key, "
        "or SET meansql.on_error = 'null' to get NULL for such rows",
    )


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
        text += f": {selection.same_criterion} for {criterion!r}, {selection.other_criteria} from other criteria"
    return text
