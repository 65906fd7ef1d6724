"""Pydantic models of a curated training example: what may be created, changed and read."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from training.errors import InvalidExample


class ExampleSource(StrEnum):
    execution_trace = "execution_trace"
    planning_trace = "planning_trace"
    quality_feedback = "quality_feedback"
    synthetic = "synthetic"
    human_annotated = "human_annotated"


class TaskType(StrEnum):
    single_step = "single_step"
    multi_step = "multi_step"
    reasoning = "reasoning"
    planning = "planning"
    code_generation = "code_generation"


OnConflict = Literal["error", "skip", "update"]


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    execution_id: str | None = Field(default=None, description="Source execution id.")
    task_id: str | None = Field(default=None, description="Source task id.")
    agent_id: uuid.UUID | None = Field(default=None, description="Agent that produced the example.")
    source_trace_hash: str | None = Field(default=None, min_length=1, max_length=512, description="Hash for deduplication; unique.")
    source_trace_id: str | None = Field(default=None, description="unified_logs.trace_id the example was promoted from.")
    input_structured: dict[str, Any] | None = Field(default=None, description="Structured input data.")
    output_text: str | None = Field(default=None, description="Expected output text.")
    expected_actions: list[dict[str, Any]] | None = Field(default=None, description="Expected action sequence.")
    final_answer: str | None = Field(default=None, description="Final answer of the execution.")
    quality_score: float | None = Field(default=None, ge=0, le=100, description="Quality, 0 to 100.")
    confidence: float | None = Field(default=None, ge=0, le=1, description="Confidence, 0 to 1.")
    labels: list[str] | None = Field(default=None, description="Classification labels.")
    domain: str | None = Field(default=None, description="Task domain, e.g. frontend.")
    difficulty: float | None = Field(default=None, ge=0, le=1, description="Difficulty, 0 to 1.")
    metadata: dict[str, Any] | None = Field(default=None, description="Additional context.")
    extracted_by: str | None = Field(default=None, description="Who or what extracted the example.")
    cascade_id: str | None = Field(default=None, description="Operator (cascade) whose prompts this example feeds.")
    cell_name: str | None = Field(default=None, description="Cell of that operator.")

    @field_validator("input_structured", "expected_actions", "metadata", mode="after")
    @classmethod
    def _encodable(cls, value: Any) -> Any:
        _check_text(value)
        return value


def _check_text(value: Any) -> None:
    """JSON values must be valid Unicode all the way down (a lone surrogate cannot be stored)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("holds text that is not valid Unicode (a lone surrogate)") from exc
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k)
            _check_text(v)
    elif isinstance(value, list):
        for v in value:
            _check_text(v)


class TrainingExampleCreate(_Fields):
    """A new example; only input_text is required."""

    source_type: ExampleSource = Field(ExampleSource.execution_trace, description="How the example was created.")
    input_text: str = Field(min_length=1, description="Input prompt or query.")
    task_type: TaskType = Field(TaskType.single_step, description="Complexity classification.")


class TrainingExampleImport(TrainingExampleCreate):
    """An example as exported: may keep its id and timestamps."""

    id: uuid.UUID | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class TrainingExampleUpdate(_Fields):
    """Fields to change; those left out keep their value."""

    source_type: ExampleSource | None = None
    input_text: str | None = Field(default=None, min_length=1)
    task_type: TaskType | None = None


class TrainingExample(BaseModel):
    """A stored example."""

    id: uuid.UUID
    execution_id: str | None = None
    task_id: str | None = None
    agent_id: uuid.UUID | None = None
    source_type: ExampleSource
    source_trace_hash: str | None = None
    source_trace_id: str | None = None
    input_text: str
    input_structured: dict[str, Any] = Field(default_factory=dict)
    output_text: str | None = None
    expected_actions: list[dict[str, Any]] = Field(default_factory=list)
    final_answer: str | None = None
    quality_score: float | None = None
    confidence: float | None = None
    labels: list[str] = Field(default_factory=list)
    domain: str | None = None
    task_type: TaskType
    difficulty: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    extracted_by: str | None = None
    cascade_id: str | None = None
    cell_name: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class ExampleFilter(BaseModel):
    """Filters shared by list, stats and export."""

    model_config = ConfigDict(extra="forbid")

    agent_id: uuid.UUID | None = None
    domain: str | None = None
    task_type: TaskType | None = None
    source_type: ExampleSource | None = None
    cascade_id: str | None = None
    cell_name: str | None = None
    min_quality: float | None = Field(default=None, ge=0, le=100)
    max_quality: float | None = Field(default=None, ge=0, le=100)
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    labels: list[str] | None = None
    labels_mode: Literal["any", "all"] = "any"
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    q: str | None = Field(default=None, description="Full-text search over input_text, output_text and final_answer.")


def field_error(exc: ValidationError) -> InvalidExample:
    """The first problem of a validation error, naming its field."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    more = len(exc.errors()) - 1
    return InvalidExample(f"field '{field}': {first['msg']}" + (f" ({more} more problems)" if more else ""), field=field)


def validate(model: type[BaseModel], data: Any) -> Any:
    """model.model_validate(data), raising InvalidExample that names the field."""
    if isinstance(data, BaseModel):
        return data
    if not isinstance(data, Mapping):
        raise InvalidExample("an example must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise field_error(exc) from exc
