"""The SQL door of the training store: DML on training_examples and training_annotations from any client.

INSERT and UPDATE of training_examples are checked field by field with the
same pydantic rules as the HTTP API before DuckDB sees them (22023 naming the
field; the table's CHECK constraints back this up with 23514 for values that
are not literals). Every change gets RETURNING so its events go to the outbox
in the statement's own transaction, as they do for HTTP writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot
from pydantic import ValidationError
from sqlglot import exp

from training import events
from training import labels as label_rows
from training.errors import InvalidExample, MeansqlError
from training.models import TrainingExampleUpdate, field_error
from training.schema import EXAMPLE_FIELDS, JSON_FIELDS


class FeatureNotSupported(MeansqlError, code="0A000"):
    """A statement shape the training store's SQL door does not handle yet."""



_CREATED = ("id", "execution_id", "agent_id", "source_type", "quality_score", "domain", "cascade_id", "cell_name")
_CHECKED = tuple(f for f in EXAMPLE_FIELDS if f not in (*JSON_FIELDS, "id", "labels", "created_at", "updated_at"))


@dataclass
class Plan:
    """How to run one DML statement on a training table, and which events its rows give."""

    sql: str
    table: str
    verb: str
    updated_fields: tuple[str, ...] = ()
    # How the label side table follows the returned ids (training.labels.sync): fill, replace, drop, rebuild or "".
    labels: str = ""

    def events(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        if self.table == "training_annotations":
            return [events.annotation_upserted(str(r[0]), r[1], r[2], r[3]) for r in rows]
        if self.verb == "INSERT":
            return [events.example_created(dict(zip(_CREATED, r))) for r in rows]
        if self.verb == "UPDATE":
            return [events.example_updated(str(r[0]), self.updated_fields) for r in rows]
        return [events.example_deleted(str(r[0])) for r in rows]


def _literal(node: exp.Expression) -> tuple[bool, Any]:
    """(is a literal, its value) for the simple constants a VALUES list or SET holds."""
    if isinstance(node, exp.Null):
        return True, None
    if isinstance(node, exp.Boolean):
        return True, node.this
    if isinstance(node, exp.Literal):
        return True, node.this if node.is_string else float(node.this)
    if isinstance(node, exp.Neg):
        ok, value = _literal(node.this)
        return ok and isinstance(value, float), -value if ok and isinstance(value, float) else None
    return False, None


def _check(values: dict[str, Any]) -> None:
    """The pydantic rules of the HTTP API, for the literal values of one row."""
    data = {k: v for k, v in values.items() if k in _CHECKED}
    for name in ("input_text", "source_type", "task_type"):
        if name in values and values[name] is None:
            raise InvalidExample(f"field '{name}': may not be null", field=name)
    try:
        TrainingExampleUpdate.model_validate(data)
    except ValidationError as exc:
        raise field_error(exc) from exc


def _table(node: exp.Expression | None) -> str | None:
    table = node.this if isinstance(node, exp.Schema) else node
    return table.name.lower() if isinstance(table, exp.Table) and not table.args.get("db") else None


def plan(text: str) -> Plan | None:
    """A plan for INSERT/UPDATE/DELETE on training_examples, or INSERT on training_annotations; else None."""
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.ParseError:
        return None
    if not isinstance(tree, exp.Insert | exp.Update | exp.Delete):
        return None
    table = _table(tree.this)
    if table == "training_example_labels":
        raise FeatureNotSupported("training_example_labels is kept by meansql with every change of training_examples",
                                  hint="change the labels column of training_examples instead")
    if table not in ("training_examples", "training_annotations") or (table == "training_annotations"
                                                                       and not isinstance(tree, exp.Insert)):
        return None
    if tree.args.get("returning") is not None:
        raise FeatureNotSupported(f"RETURNING on {table} is not supported",
                                  hint=f"run the statement, then SELECT from {table}")
    body = text.strip().rstrip(";").rstrip()
    if table == "training_annotations":
        return Plan(f"{body} RETURNING trace_id, trainable, verified, confidence", table, "INSERT")
    if isinstance(tree, exp.Insert):
        target = tree.this
        columns = [c.name.lower() for c in target.expressions] if isinstance(target, exp.Schema) else list(EXAMPLE_FIELDS)
        source = tree.expression
        if isinstance(source, exp.Values):
            for row in source.expressions:
                values = {}
                for name, node in zip(columns, row.expressions):
                    ok, value = _literal(node)
                    if ok:
                        values[name] = value
                _check(values)
        returning = ", ".join(f"CAST({c} AS VARCHAR)" if c in ("id", "agent_id") else c for c in _CREATED)
        # ON CONFLICT ... DO UPDATE and INSERT OR REPLACE return existing rows too: their label rows are replaced.
        how = "replace" if tree.args.get("conflict") is not None or tree.args.get("alternative") else "fill"
        return Plan(f"{body} RETURNING {returning}", table, "INSERT", labels=how)
    if isinstance(tree, exp.Update):
        values = {}
        fields = []
        for assignment in tree.expressions:
            if isinstance(assignment, exp.EQ) and isinstance(assignment.this, exp.Column):
                name = assignment.this.name.lower()
                fields.append(name)
                ok, value = _literal(assignment.expression)
                if ok:
                    values[name] = value
        _check(values)
        if "updated_at" not in fields:
            tree.set("expressions", [*tree.expressions, exp.EQ(this=exp.column("updated_at"), expression=exp.func("now"))])
            body = tree.sql(dialect="duckdb")
        # Label rows carry the labels and sort columns; a changed id leaves rows under the old one, which
        # RETURNING does not name: all are rebuilt then.
        how = "rebuild" if "id" in fields else "replace" if label_rows.touches(fields) else ""
        return Plan(f"{body} RETURNING CAST(id AS VARCHAR)", table, "UPDATE", tuple(sorted(set(fields))), how)
    return Plan(f"{body} RETURNING CAST(id AS VARCHAR)", table, "DELETE", labels="drop")
