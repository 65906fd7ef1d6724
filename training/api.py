"""HTTP API of the curated store (the TrainingExampleService) and the studio's training endpoints.

An APIRouter only: server/http.py builds the app, puts the Store in
``app.state.store``, mounts this router and registers ``exception_handlers``,
which turn the training layer's errors into responses in one place: an unknown
id is a 404, a taken source_trace_hash a 409 that names the existing example,
an invalid field a 422 shaped like FastAPI's own validation errors.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from training import examples, export, retrieval, schema
from training.annotations import annotate
from training.errors import DuplicateExample, ExampleNotFound, InvalidExample
from training.models import (
    ExampleFilter,
    ExampleSource,
    OnConflict,
    TaskType,
    TrainingExample,
    TrainingExampleCreate,
    TrainingExampleUpdate,
)
from training.store import Store

router = APIRouter()

OrderBy = Literal["created_at", "updated_at", "quality_score", "confidence", "difficulty", "relevance"]


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(get_store)]


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ExampleNotFound)
    return JSONResponse({"detail": exc.message}, status_code=404)


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DuplicateExample)
    return JSONResponse({"detail": exc.message, "existing_id": exc.existing_id}, status_code=409)


def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidExample)
    loc = ["body", *(exc.field or "body").split(".")] if exc.field not in (None, "body") else ["body"]
    return JSONResponse({"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]}, status_code=422)


def exception_handlers(app: FastAPI) -> None:
    """Register the responses to the training layer's errors on the app that mounts the router."""
    app.add_exception_handler(ExampleNotFound, _not_found)
    app.add_exception_handler(DuplicateExample, _conflict)
    app.add_exception_handler(InvalidExample, _invalid)


def filters(
    agent_id: uuid.UUID | None = None,
    domain: str | None = None,
    task_type: TaskType | None = None,
    source_type: ExampleSource | None = None,
    cascade_id: str | None = None,
    cell_name: str | None = None,
    min_quality: Annotated[float | None, Query(ge=0, le=100)] = None,
    max_quality: Annotated[float | None, Query(ge=0, le=100)] = None,
    min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    labels: Annotated[list[str] | None, Query(description="Repeat or comma-separate; see labels_mode.")] = None,
    labels_mode: Literal["any", "all"] = "any",
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    q: Annotated[str | None, Query(max_length=1000, description="Full-text search (BM25), every word must match.")] = None,
) -> ExampleFilter:
    """The filters list, stats and export share."""
    split = [p.strip() for v in labels for p in v.split(",") if p.strip()] if labels else None
    return ExampleFilter(agent_id=agent_id, domain=domain, task_type=task_type, source_type=source_type,
                         cascade_id=cascade_id, cell_name=cell_name, min_quality=min_quality, max_quality=max_quality,
                         min_confidence=min_confidence, labels=split, labels_mode=labels_mode,
                         created_after=created_after, created_before=created_before, q=q)


FilterDep = Annotated[ExampleFilter, Depends(filters)]


class ExamplePage(BaseModel):
    items: list[TrainingExample]
    total: int
    limit: int
    offset: int


class LabelCount(BaseModel):
    label: str
    count: int


class Stats(BaseModel):
    total_examples: int
    avg_quality_score: float | None
    avg_confidence: float | None
    avg_difficulty: float | None
    unique_domains: int
    unique_agents: int
    domain_distribution: dict[str, int]
    source_type_distribution: dict[str, int]
    task_type_distribution: dict[str, int]


class BulkRow(BaseModel):
    index: int
    status: Literal["created", "updated", "skipped", "conflict", "invalid"]
    id: str | None = None
    error: str | None = None
    field: str | None = None


class BulkResult(BaseModel):
    results: list[BulkRow]
    created: int
    updated: int
    skipped: int
    conflicts: int
    invalid: int


# -- the TrainingExampleService -------------------------------------------------------
@router.post("/training-examples/", response_model=TrainingExample, status_code=201, tags=["training-examples"],
             responses={409: {"description": "source_trace_hash exists; the body names the existing id"}})
def create_example(body: TrainingExampleCreate, store: StoreDep, on_conflict: OnConflict = "error") -> Any:
    """Create an example; a duplicate source_trace_hash is a 409 unless on_conflict says skip or update."""
    example, status = examples.create(store, body, on_conflict=on_conflict)
    if status != "created":
        return JSONResponse(example.model_dump(mode="json"), status_code=200, headers={"X-Meansql-Status": status})
    return example


@router.get("/training-examples/", response_model=ExamplePage, tags=["training-examples"])
def list_examples(
    store: StoreDep, f: FilterDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    order_by: OrderBy = "created_at",
    order: Literal["asc", "desc"] = "desc",
) -> ExamplePage:
    """Examples matching the filters, a page at a time, with the total."""
    items, total = examples.list_examples(store, f, limit=limit, offset=offset, order_by=order_by, order=order)
    return ExamplePage(items=items, total=total, limit=limit, offset=offset)


@router.get("/training-examples/stats", response_model=Stats, tags=["training-examples"])
def example_stats(store: StoreDep, f: FilterDep) -> Any:
    """Totals, averages and distributions of the matching examples."""
    return examples.stats(store, f)


@router.get("/training-examples/labels", response_model=list[LabelCount], tags=["training-examples"])
def example_labels(store: StoreDep) -> Any:
    """Every label with how many examples carry it."""
    return examples.labels(store)


@router.get("/training-examples/export", tags=["training-examples"],
            responses={200: {"content": {t: {} for t in set(export.MEDIA_TYPES.values())}}})
def export_examples(store: StoreDep, f: FilterDep, format: Literal["jsonl", "openai", "csv", "parquet"] = "jsonl") -> Response:
    """The matching examples as jsonl (re-importable), openai chat fine-tuning JSONL, csv or parquet."""
    chunks: Iterator[bytes] = export.export(examples.iter_examples(store, f), format)
    ext = {"openai": "jsonl"}.get(format, format)
    return StreamingResponse(chunks, media_type=export.MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="training_examples.{ext}"'})


_BULK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


@router.post("/training-examples/bulk", response_model=BulkResult, tags=["training-examples"], openapi_extra=_BULK_BODY)
async def bulk_examples(request: Request, store: StoreDep, on_conflict: OnConflict = "error") -> Any:
    """Create many examples: a JSON list, a JSONL body or a JSONL file upload; one result per row."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        upload = next((v for v in form.values() if not isinstance(v, str)), None)
        if upload is None:
            raise HTTPException(422, detail=[{"loc": ["body", "file"], "msg": "upload a JSONL file", "type": "missing"}])
        raw = await upload.read()
        kind = "application/x-ndjson"
    else:
        raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(422, detail=[{"loc": ["body"], "msg": "the body is not UTF-8", "type": "value_error"}]) from exc
    items: list[Any] = []
    if kind == "application/json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HTTPException(422, detail=[{"loc": ["body"], "msg": f"not JSON: {exc}", "type": "json_invalid"}]) from exc
        if not isinstance(data, list):
            raise HTTPException(422, detail=[{"loc": ["body"], "msg": "a JSON list of examples", "type": "list_type"}])
        items = data
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                items.append(_BadLine(f"line {n} is not JSON: {exc.msg}"))
    from starlette.concurrency import run_in_threadpool

    results = await run_in_threadpool(examples.bulk, store, [i.text if isinstance(i, _BadLine) else i for i in items],
                                      on_conflict=on_conflict)
    for item, res in zip(items, results):
        if isinstance(item, _BadLine):
            res.update(error=item.text, field="body")
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("created", "updated", "skipped", "conflict", "invalid")}
    return {"results": results, "created": counts["created"], "updated": counts["updated"], "skipped": counts["skipped"],
            "conflicts": counts["conflict"], "invalid": counts["invalid"]}


class _BadLine:
    def __init__(self, text: str) -> None:
        self.text = text


@router.post("/training-examples/from-trace/{trace_id}", response_model=TrainingExample, status_code=201,
             tags=["training-examples"], responses={404: {"description": "no such trace"}, 409: {"description": "promoted before"}})
def promote_trace(trace_id: str, store: StoreDep, on_conflict: OnConflict = "error",
                  overrides: Annotated[dict[str, Any] | None, Body()] = None) -> Any:
    """Promote a logged (annotated) model answer into a curated example that keeps the trace's id."""
    example, status = examples.promote(store, trace_id, overrides, on_conflict=on_conflict)
    if status != "created":
        return JSONResponse(example.model_dump(mode="json"), status_code=200)
    return example


@router.get("/training-examples/{example_id}", response_model=TrainingExample, tags=["training-examples"],
            responses={404: {"description": "no such example"}})
def get_example(example_id: str, store: StoreDep) -> Any:
    example = examples.get(store, example_id)
    if example is None:
        raise HTTPException(404, detail=f"no training example has id {example_id}")
    return example


@router.patch("/training-examples/{example_id}", response_model=TrainingExample, tags=["training-examples"],
              responses={404: {"description": "no such example"}, 409: {"description": "source_trace_hash taken"}})
def update_example(example_id: str, body: TrainingExampleUpdate, store: StoreDep) -> Any:
    return examples.update(store, example_id, body)


@router.delete("/training-examples/{example_id}", status_code=204, tags=["training-examples"],
               responses={404: {"description": "no such example"}})
def delete_example(example_id: str, store: StoreDep) -> Response:
    examples.delete(store, example_id)
    return Response(status_code=204)


# -- the studio's endpoints ---------------------------------------------------------------
class MarkTrainable(BaseModel):
    trace_ids: list[str] = Field(min_length=1)
    trainable: bool = True
    verified: bool = False
    confidence: float | None = Field(default=1.0, ge=0, le=1)
    notes: str | None = None
    tags: list[str] | None = None


@router.get("/api/training/examples", tags=["studio"])
def studio_examples(store: StoreDep, cascade_id: str | None = None, trainable_only: bool = True,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0) -> dict[str, Any]:
    """Annotated logged calls of a cascade (newest first) and its curated examples."""
    cur = store.cursor()
    try:
        c = cur.execute(schema.SELECT_ANNOTATED_EXAMPLES, [cascade_id, cascade_id, trainable_only, limit, offset])
        names = [d[0] for d in c.description]
        logged = [dict(zip(names, row)) for row in c.fetchall()]
    finally:
        cur.close()
    curated, total = examples.list_examples(store, ExampleFilter(cascade_id=cascade_id), limit=limit, offset=offset)
    return {"examples": logged, "curated": [e.model_dump(mode="json") for e in curated], "curated_total": total}


@router.post("/api/training/mark-trainable", tags=["studio"])
def studio_mark_trainable(body: MarkTrainable, store: StoreDep) -> dict[str, Any]:
    """Annotate logged calls (the last mark of a trace wins)."""
    n = annotate(store, body.trace_ids, trainable=body.trainable, verified=body.verified, confidence=body.confidence,
                 notes=body.notes, tags=body.tags)
    return {"marked": n, "trace_ids": body.trace_ids}


@router.get("/api/training/session-logs", tags=["studio"])
def studio_session_logs(store: StoreDep, session_id: str, limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> dict[str, Any]:
    """The model answers of one session, with their annotation, to pick examples from."""
    cur = store.cursor()
    try:
        c = cur.execute(schema.SESSION_LOGS, [session_id, limit])
        names = [d[0] for d in c.description]
        rows = [dict(zip(names, row)) for row in c.fetchall()]
    finally:
        cur.close()
    return {"session_id": session_id, "logs": rows}


@router.get("/api/training/stats", tags=["studio"])
def studio_stats(store: StoreDep, cascade_id: str | None = None) -> dict[str, Any]:
    """Examples, trainable and verified counts per cascade and cell (training_stats_by_cascade)."""
    cur = store.cursor()
    try:
        rows = retrieval.stats(cur, cascade_id)
    finally:
        cur.close()
    return {"stats": rows, "curated": examples.stats(store, ExampleFilter(cascade_id=cascade_id))}
