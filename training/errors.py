"""Error classes of the training layer, and the base every meansql error derives from.

Each class carries the SQLSTATE the wire reports for it. Subclasses register
themselves by code (``class X(MeansqlError, code="42P01")``), as psycopg's
``errors`` module does, so the server can translate any of them in one place.
"""

from __future__ import annotations

from typing import ClassVar


class MeansqlError(Exception):
    """Base of every error meansql raises on purpose."""

    sqlstate: ClassVar[str] = "XX000"
    severity: ClassVar[str] = "ERROR"
    by_code: ClassVar[dict[str, type[MeansqlError]]] = {}

    def __init_subclass__(cls, code: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.sqlstate = code
            MeansqlError.by_code.setdefault(code, cls)

    def __init__(self, message: str, *, hint: str | None = None, position: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.position = position


class StoreError(MeansqlError, code="58030"):
    """The database file could not be opened or written."""


class DatabaseLocked(StoreError, code="55006"):
    """Another process holds the DuckDB file."""


class InvalidAnnotation(MeansqlError, code="22023"):
    """An annotation or example value is out of range."""


class InvalidExample(MeansqlError, code="22023"):
    """A training example field is missing, out of range or not one of its allowed values."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.field = field


class DuplicateExample(MeansqlError, code="23505"):
    """An example with the same source_trace_hash exists."""

    def __init__(self, message: str, *, existing_id: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.existing_id = existing_id


class ExampleNotFound(MeansqlError, code="P0002"):
    """No training example, or no logged trace, has the id asked for."""


class EmbeddingUnavailable(MeansqlError, code="55000"):
    """The embedding model could not be loaded or gave no vectors."""
