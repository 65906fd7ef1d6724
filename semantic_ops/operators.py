"""Operators: pydantic models of the YAML files, their loader and the registry.

The built-in MEANS is a YAML file in ``operators/`` read by the same loader as
users' files; a user directory adds operators or overrides built-ins by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from semantic_ops.errors import OperatorDefinitionError
from semantic_ops.rewrite import OperatorSignature

BUILTIN_DIR = Path(__file__).with_name("operators")

SQL_TYPES = ("VARCHAR", "BOOLEAN", "DOUBLE", "BIGINT", "INTEGER")


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_turns: int = Field(1, ge=1, description="Model turns per call; only 1 is used today.")


class Cascade(BaseModel):
    """A cheap proxy answers the rows it is confident about; the cell's model answers the rest."""

    model_config = ConfigDict(extra="forbid")
    proxy: Literal["local"] = Field("local", description="The proxy judge; only the local judge today.")
    min_confidence: float = Field(0.8, ge=0.0, le=1.0, description="Proxy answers at or above this confidence are kept; "
                                  "`meansql training calibrate` can set it from annotated examples.")


class Cell(BaseModel):
    """One step of an operator: a prompt, a model and how training examples are injected."""

    model_config = ConfigDict(extra="forbid")
    name: str
    model: str | None = Field(None, description="litellm model name; default: the configured model.")
    instructions: str = Field(description="Jinja2 template; sees input.<arg> for each argument.")
    system: str | None = Field(None, description="Optional system message (Jinja2).")
    use_training: bool = False
    training_limit: int = Field(5, ge=0, le=100)
    training_strategy: Literal["recent", "high_confidence", "random", "semantic"] = "recent"
    training_min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    training_verified_only: bool = False
    training_format: Literal["xml", "markdown", "few_shot"] = "xml"
    training_source: Literal["logs", "curated", "both"] = Field(
        "both", description="Annotated log traces, curated training_examples of this cascade and cell, or both.")
    training_min_quality: float = Field(0.0, ge=0.0, le=100.0, description="Curated examples below this quality_score are skipped.")
    batch_size: int = Field(1, ge=1, le=100, description="Items judged in one prompt (JSON answer); 1: one call per item.")
    batch_instructions: str | None = Field(None, description="Jinja2 template of a batch prompt; sees items and question.")
    temperature: float | None = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(16, ge=1)
    rules: Rules = Field(default_factory=lambda: Rules(max_turns=1))
    cascade: Cascade | None = Field(None, description="Let the local judge answer confident rows before the model.")


class SqlArg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    type: str = "VARCHAR"

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value.upper() not in SQL_TYPES:
            raise ValueError(f"must be one of {', '.join(SQL_TYPES)}")
        return value.upper()


class SqlFunction(BaseModel):
    """How the operator appears in SQL: a function, and an infix word if it declares one."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    args: list[SqlArg] = Field(min_length=1)
    returns: str = "BOOLEAN"
    operator: str | None = Field(None, pattern=r"^[A-Za-z_]+$", description="Infix keyword, e.g. MEANS.")

    @field_validator("returns")
    @classmethod
    def _known_return(cls, value: str) -> str:
        if value.upper() not in ("BOOLEAN", "VARCHAR"):
            raise ValueError("must be BOOLEAN or VARCHAR")
        return value.upper()


class Operator(BaseModel):
    """A cascade of one cell, optionally exposed as a SQL function."""

    model_config = ConfigDict(extra="forbid")
    cascade_id: str
    description: str | None = None
    inputs_schema: dict[str, str] = Field(default_factory=dict)
    sql_function: SqlFunction | None = None
    cells: list[Cell] = Field(min_length=1, max_length=1)
    source: str | None = Field(None, exclude=True)

    @property
    def cell(self) -> Cell:
        return self.cells[0]

    @property
    def returns(self) -> str:
        return self.sql_function.returns if self.sql_function else "VARCHAR"

    @property
    def arg_names(self) -> tuple[str, ...]:
        if self.sql_function:
            return tuple(a.name for a in self.sql_function.args)
        return tuple(self.inputs_schema) or ("text",)

    def signature(self) -> OperatorSignature:
        """What the rewrite needs to know about this operator's SQL function."""
        assert self.sql_function is not None
        fn = self.sql_function
        return OperatorSignature(
            name=fn.name.lower(),
            arg_names=tuple(a.name for a in fn.args),
            arg_types=tuple(a.type for a in fn.args),
            returns=fn.returns,
            infix=fn.operator.upper() if fn.operator else None,
            udf_name=f"meansql_{fn.name.lower()}",
        )


def _field_path(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc)


def parse_operator(data: Any, source: str) -> Operator:
    """Validate one operator definition; errors name the file and the field."""
    if not isinstance(data, dict):
        raise OperatorDefinitionError(f"{source}: an operator file must be a YAML mapping")
    try:
        op = Operator.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise OperatorDefinitionError(
            f"{source}: field '{_field_path(first['loc'])}': {first['msg']}"
            + (f" ({len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else "")
        ) from exc
    op.source = source
    return op


def load_file(path: str | Path) -> Operator:
    """Read and validate one operator YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OperatorDefinitionError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise OperatorDefinitionError(f"{path}: not valid YAML: {exc}") from exc
    return parse_operator(data, str(path))


def load_dir(path: str | Path) -> list[Operator]:
    """Every *.yaml / *.yml operator in a directory, in name order."""
    path = Path(path)
    if not path.is_dir():
        raise OperatorDefinitionError(f"{path}: operators_dir is not a directory")
    files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    return [load_file(f) for f in files]


class Registry:
    """Operators by cascade_id, and the SQL surface they declare."""

    def __init__(self, operators: Iterable[Operator]) -> None:
        self.by_cascade: dict[str, Operator] = {}
        for op in operators:
            self.by_cascade[op.cascade_id] = op  # later files override earlier ones
        self.by_function: dict[str, Operator] = {}
        self.infix: dict[str, str] = {}
        for op in self.by_cascade.values():
            if op.sql_function is None:
                continue
            sig = op.signature()
            other = self.by_function.get(sig.name)
            if other is not None:
                raise OperatorDefinitionError(
                    f"{op.source}: field 'sql_function.name': {sig.name} is also declared by {other.source}"
                )
            self.by_function[sig.name] = op
            if sig.infix:
                self.infix[sig.infix] = sig.name

    @classmethod
    def load(cls, operators_dir: str | Path | None = None) -> Registry:
        """Built-in operators, then the user's directory on top."""
        ops = load_dir(BUILTIN_DIR)
        if operators_dir is not None:
            ops += load_dir(operators_dir)
        return cls(ops)

    def signatures(self) -> Mapping[str, OperatorSignature]:
        return {name: op.signature() for name, op in self.by_function.items()}

    def function(self, name: str) -> Operator:
        return self.by_function[name.lower()]
