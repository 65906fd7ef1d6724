"""Exporting curated examples: jsonl (re-importable), openai chat fine-tuning, csv and parquet."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from training.models import TrainingExample

FORMATS = ("jsonl", "openai", "csv", "parquet")
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "openai": "application/x-ndjson", "csv": "text/csv",
               "parquet": "application/vnd.apache.parquet"}
DEFAULT_SYSTEM = "You are a helpful assistant."


def _record(e: TrainingExample) -> dict[str, Any]:
    return e.model_dump(mode="json")


def openai_messages(e: TrainingExample) -> dict[str, Any]:
    """One chat fine-tuning line: system, user (the input), assistant (the output)."""
    system = str(e.metadata.get("system_prompt") or DEFAULT_SYSTEM)
    answer = e.output_text if e.output_text is not None else (e.final_answer or "")
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": e.input_text},
                         {"role": "assistant", "content": answer}]}


def _jsonl(examples: Iterable[TrainingExample], line: Any) -> Iterator[bytes]:
    buf: list[str] = []
    for e in examples:
        buf.append(json.dumps(line(e), ensure_ascii=False))
        if len(buf) >= 1000:
            yield ("\n".join(buf) + "\n").encode()
            buf = []
    if buf:
        yield ("\n".join(buf) + "\n").encode()


def _flat(e: TrainingExample) -> dict[str, Any]:
    rec = _record(e)
    for name in ("input_structured", "expected_actions", "metadata", "labels"):
        rec[name] = json.dumps(rec[name], ensure_ascii=False)
    return rec


def _csv(examples: Iterable[TrainingExample]) -> Iterator[bytes]:
    fields = list(TrainingExample.model_fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for i, e in enumerate(examples, 1):
        writer.writerow(_flat(e))
        if i % 1000 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def _parquet(examples: Iterable[TrainingExample]) -> Iterator[bytes]:
    fields = list(TrainingExample.model_fields)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "examples.parquet"
        writer: pq.ParquetWriter | None = None
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal writer
            table = pa.Table.from_pylist(batch, schema=_PARQUET_SCHEMA)
            if writer is None:
                writer = pq.ParquetWriter(path, _PARQUET_SCHEMA)
            writer.write_table(table)
            batch.clear()

        for e in examples:
            rec = _flat(e)
            rec["labels"] = list(e.labels)
            batch.append({f: rec[f] for f in fields})
            if len(batch) >= 5000:
                flush()
        if batch or writer is None:
            flush()
        assert writer is not None
        writer.close()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk


_PARQUET_SCHEMA = pa.schema([
    (f, pa.list_(pa.string()) if f == "labels" else pa.float64() if f in ("quality_score", "confidence", "difficulty")
     else pa.string())
    for f in TrainingExample.model_fields
])


def export(examples: Iterable[TrainingExample], fmt: str) -> Iterator[bytes]:
    """The examples in one of FORMATS, as chunks of bytes."""
    if fmt == "jsonl":
        return _jsonl(examples, _record)
    if fmt == "openai":
        return _jsonl(examples, openai_messages)
    if fmt == "csv":
        return _csv(examples)
    if fmt == "parquet":
        return _parquet(examples)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")
