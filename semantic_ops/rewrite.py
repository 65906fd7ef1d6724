"""Rewrite semantic operator calls into calls of the UDFs that run them.

``description MEANS 'eco'`` and ``semantic_matches(description, 'eco')`` both
become ``meansql_semantic_matches('<token>', description, 'eco')``: the token
tells the UDF which query it runs for. Pure: no I/O, the input is not mutated.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlglot import exp

from semantic_ops.dialect import SemanticCall, has_semantic_words, to_duckdb
from semantic_ops.errors import (
    SemanticSyntaxError,
    SemanticTypeError,
    UndefinedOperator,
)
from semantic_ops.functions import Search, rewrite_vector_search

__all__ = ["OperatorSignature", "Plan", "rewrite"]

# DuckDB type names (and aliases) under which an argument must be text.
_TEXT_TYPES = frozenset(
    {"VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR", "CHARACTER VARYING"}
)


@dataclass(frozen=True, kw_only=True)
class OperatorSignature:
    """How a semantic operator is called and which UDF runs it."""

    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]
    returns: str
    infix: str | None = None
    udf_name: str

    def __post_init__(self) -> None:
        if len(self.arg_names) != len(self.arg_types):
            raise ValueError(f"{self.name}: arg_names and arg_types differ in length")

    @property
    def usage(self) -> str:
        """The call as written, e.g. ``semantic_matches(text, criterion)``."""
        return f"{self.name}({', '.join(self.arg_names)})"


@dataclass(frozen=True)
class Plan:
    """A statement's semantic calls: (operator name, argument SQL), in text order."""

    calls: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def has_semantic(self) -> bool:
        """Whether the statement calls any semantic operator."""
        return bool(self.calls)


def _position(node: exp.Expr) -> int | None:
    """1-based offset of ``node`` in the SQL, when the parser recorded it."""
    start = node.meta.get("start")
    return start + 1 if isinstance(start, int) else None


def _literal_kind(node: exp.Expr) -> tuple[str, str] | None:
    """("number"|"boolean", SQL text) when ``node`` is a non-text literal, else None."""
    if isinstance(node, exp.Literal) and node.is_number:
        return "number", node.name
    if (
        isinstance(node, exp.Neg)
        and isinstance(node.this, exp.Literal)
        and node.this.is_number
    ):
        return "number", f"-{node.this.name}"
    if isinstance(node, exp.Boolean):
        return "boolean", "TRUE" if node.this else "FALSE"
    return None


def _is_text_type(type_name: str) -> bool:
    base = type_name.split("(", 1)[0].strip().upper()
    return base in _TEXT_TYPES


def _check_args(
    node: exp.Expr, label: str, signature: OperatorSignature, args: list[exp.Expr]
) -> None:
    """Raise when ``args`` do not fit ``signature`` (count, or a literal's type)."""
    expected = len(signature.arg_names)
    if len(args) != expected:
        missing = (
            "is missing an argument"
            if len(args) < expected
            else "has too many arguments"
        )
        raise SemanticSyntaxError(
            f"{label} {missing}: it takes {expected} "
            f"({', '.join(signature.arg_names)}), got {len(args)}",
            hint=f"Write {signature.usage}.",
            position=_position(node),
        )
    for arg, arg_name, arg_type in zip(args, signature.arg_names, signature.arg_types):
        kind = _literal_kind(arg) if _is_text_type(arg_type) else None
        if kind is None:
            continue
        what, text = kind
        quoted = text.lower() if what == "boolean" else text
        raise SemanticTypeError(
            f"{label} needs text for {arg_name}, got the {what} {text}; "
            f"write '{quoted}' or cast it with ::TEXT",
            position=_position(arg) or _position(node),
        )


def _lookup(
    node: exp.Expr, by_name: Mapping[str, OperatorSignature]
) -> tuple[OperatorSignature, str, list[exp.Expr]] | None:
    """(signature, label for messages, arguments) if ``node`` calls an operator."""
    if isinstance(node, SemanticCall):
        signature = by_name.get(node.name.lower())
        if signature is None:
            raise UndefinedOperator(
                f"semantic operator {node.name} is not defined",
                position=_position(node),
            )
        return signature, signature.infix or signature.name, list(node.expressions)
    if isinstance(node, exp.Anonymous) and isinstance(node.this, str):
        signature = by_name.get(node.this.lower())
        if signature is None:
            return None
        return signature, node.this, list(node.expressions)
    return None


def _reject_unparsed(node: exp.Expr, signatures: Collection[OperatorSignature]) -> None:
    """Raise when a statement sqlglot kept as raw text (a Command) uses an operator.

    Left alone, DuckDB would get the raw MEANS and report a bare syntax error.
    """
    if not isinstance(node, exp.Command):
        return
    infix = {s.infix: s.name for s in signatures if s.infix}
    names = [s.name for s in signatures]
    if has_semantic_words(to_duckdb(node), infix, names):
        raise SemanticSyntaxError(
            f"semantic operators cannot be used in a {node.name.upper()} statement",
            hint="meansql rewrites only statements it can parse; run the query itself.",
        )


def rewrite(
    statement: exp.Expr, operators: Mapping[str, OperatorSignature], token: str, search: Search | None = None
) -> tuple[exp.Expr, Plan]:
    """Replace each semantic call in a copy of ``statement`` with its UDF call.

    ``operators`` maps operator names to signatures (names match case-insensitively).
    Each call becomes ``udf_name('<token>', arg1, arg2, ...)``.
    """
    by_name = {signature.name.lower(): signature for signature in operators.values()}
    tree = rewrite_vector_search(statement.copy(), search)

    # Every call is checked before any is replaced, so arguments are reported
    # as the user wrote them.
    found: list[tuple[exp.Expr, OperatorSignature]] = []
    calls: list[tuple[int | None, str, tuple[str, ...]]] = []
    for node in tree.dfs():
        _reject_unparsed(node, by_name.values())
        match = _lookup(node, by_name)
        if match is None:
            continue
        signature, label, args = match
        _check_args(node, label, signature, args)
        found.append((node, signature))
        calls.append(
            (_position(node), signature.name, tuple(to_duckdb(arg) for arg in args))
        )
    # sqlglot keeps a WITH clause after the body it belongs to, so the tree's
    # order is not the text's; where the parser noted positions, use those.
    if all(position is not None for position, _, _ in calls):
        calls.sort(key=lambda call: call[0] or 0)
    plan = Plan(calls=tuple((name, args) for _, name, args in calls))

    # Innermost first, so a call nested in another's argument is already
    # rewritten when its parent moves that argument into the UDF call.
    for node, signature in reversed(found):
        udf = exp.Anonymous(
            this=signature.udf_name,
            expressions=[exp.Literal.string(token), *node.expressions],
        )
        if node is tree:
            tree = udf
        else:
            node.replace(udf)
    return tree, plan
