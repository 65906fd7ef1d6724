"""A Postgres-based sqlglot dialect that parses infix semantic operators.

``description MEANS 'eco-friendly'`` parses into a ``SemanticCall`` node whose
``this`` is the operator's name and whose ``expressions`` are the operands.
Which words are infix operators is data (``make_dialect``), so new operators
need no code here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from functools import lru_cache
from typing import Any, ClassVar

import sqlglot
from sqlglot import Token, Tokenizer, TokenType, exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.generators.duckdb import DuckDBGenerator
from sqlglot.generators.postgres import PostgresGenerator
from sqlglot.parsers.postgres import PostgresParser

from semantic_ops.errors import SemanticSyntaxError

__all__ = [
    "SemanticCall",
    "has_semantic_words",
    "make_dialect",
    "parse",
    "to_duckdb",
]

# Token types whose text is a literal value, never a word of the query.
_LITERAL_TOKENS = frozenset(
    {
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.BYTE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.RAW_STRING,
        TokenType.UNICODE_STRING,
        TokenType.NUMBER,
    }
)


class SemanticCall(exp.Expression, exp.Func):
    """A semantic operator call: ``this`` is its name, ``expressions`` its operands."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "expressions": True}
    is_var_len_args: ClassVar[bool] = True

    @property
    def name(self) -> str:
        """The operator's name, e.g. ``semantic_matches``."""
        return str(self.this)


def _function_sql(gen: sqlglot.Generator, node: SemanticCall) -> str:
    """Print a SemanticCall as an ordinary call ``name(a, b)``."""
    return gen.func(node.name, *node.expressions)


def _missing_criterion(word: str, token: Token) -> SemanticSyntaxError:
    example = f"description {word} 'eco-friendly'"
    return SemanticSyntaxError(
        f"{word} needs a criterion after it, e.g. {example}",
        hint=f"Put a text value or expression after {word}.",
        position=token.start + 1,
    )


def _build_dialect(infix: frozenset[tuple[str, str]]) -> sqlglot.Dialect:
    """Create the dialect class for one set of infix words and return an instance."""
    words: dict[str, str] = {word.upper(): name for word, name in infix}
    for word in words:
        # A keyword (LIKE, IN, ...) never arrives as a VAR token, so it can't work here.
        tokens = Postgres().tokenize(word)
        if len(tokens) != 1 or tokens[0].token_type != TokenType.VAR:
            raise ValueError(f"infix word {word!r} is an SQL keyword or not one word")
    keyword_of: dict[str, str] = {name.lower(): word for word, name in words.items()}

    class Parser(PostgresParser):
        def _parse_semantic_infix(self, this: exp.Expr | None) -> exp.Expr | None:
            word = self._prev
            name = words.get(word.text.upper())
            if name is None or this is None:
                # Not ours (an alias without AS, say): put the word back, and the NOT
                # that _parse_range may have consumed just before it, so that the
                # caller sees exactly the tokens it would have without this entry.
                back = self._index - 1
                if back > 0 and self._tokens[back - 1].token_type == TokenType.NOT:
                    back -= 1
                self._retreat(back)
                return None
            criterion = self._parse_bitwise()
            if criterion is None:
                raise _missing_criterion(word.text.upper(), word)
            call = SemanticCall(this=name, expressions=[this, criterion])
            return self.expression(call, token=word)

        RANGE_PARSERS: ClassVar[dict[TokenType, Callable[[Any, Any], Any]]] = {
            **PostgresParser.RANGE_PARSERS,
            TokenType.VAR: _parse_semantic_infix,
        }

    def _infix_sql(gen: sqlglot.Generator, node: SemanticCall) -> str:
        word = keyword_of.get(node.name.lower())
        operands = node.expressions
        if word is None or len(operands) != 2:
            return _function_sql(gen, node)
        return f"{gen.sql(operands[0])} {word} {gen.sql(operands[1])}"

    class Generator(PostgresGenerator):
        TRANSFORMS: ClassVar[dict[type[exp.Expr], Callable[..., str]]] = {
            **PostgresGenerator.TRANSFORMS,
            SemanticCall: _infix_sql,
        }

    # sqlglot registers every Dialect subclass by its lower-cased class name, so
    # the name must not shadow a real dialect such as "postgres".
    name = "meansql_" + "_".join(sorted(words))
    dialect_class = type(name, (Postgres,), {"Parser": Parser, "Generator": Generator})
    dialect: sqlglot.Dialect = dialect_class()
    return dialect


@lru_cache(maxsize=32)
def _cached_dialect(infix: frozenset[tuple[str, str]]) -> sqlglot.Dialect:
    return _build_dialect(infix)


def make_dialect(infix: Mapping[str, str]) -> sqlglot.Dialect:
    """The dialect for ``infix`` (upper-case word -> operator name), cached."""
    return _cached_dialect(
        frozenset((word.upper(), name) for word, name in infix.items())
    )


class _DuckDB(DuckDB):
    """DuckDB, plus a SemanticCall left unrewritten printed as a plain call."""

    class Generator(DuckDBGenerator):
        TRANSFORMS: ClassVar[dict[type[exp.Expr], Callable[..., str]]] = {
            **DuckDBGenerator.TRANSFORMS,
            SemanticCall: _function_sql,
        }


_DUCKDB = _DuckDB()


def to_duckdb(expr: exp.Expr) -> str:
    """DuckDB SQL text for ``expr``."""
    return _DUCKDB.generate(expr)


def _position(sql: str, error: dict[str, Any]) -> int | None:
    """1-based character offset where the token sqlglot complains about starts."""
    line, col = error.get("line"), error.get("col")
    if not isinstance(line, int) or not isinstance(col, int):
        return None
    lines = sql.split("\n")
    if not 1 <= line <= len(lines):
        return None
    # sqlglot's col is the token's last character; the highlight is the token itself.
    width = len(error.get("highlight") or "") or 1
    return sum(len(text) + 1 for text in lines[: line - 1]) + max(col - width + 1, 1)


def _syntax_error(sql: str, error: SqlglotError) -> SemanticSyntaxError:
    if isinstance(error, ParseError) and error.errors:
        first = error.errors[0]
        message = first.get("description") or str(error)
        return SemanticSyntaxError(
            f"syntax error: {message}", position=_position(sql, first)
        )
    if isinstance(error, TokenError):
        start = error.start
        return SemanticSyntaxError(
            f"syntax error: {error}", position=None if start is None else start + 1
        )
    return SemanticSyntaxError(f"syntax error: {error}")


def parse(sql: str, infix: Mapping[str, str]) -> list[exp.Expr]:
    """Parse one or more ``;``-separated statements; empty statements are dropped."""
    dialect = make_dialect(infix)
    try:
        statements = dialect.parse(sql)
    except SqlglotError as error:
        raise _syntax_error(sql, error) from error
    return [statement for statement in statements if statement is not None]


def _is_command_text(
    tokens: list[Token], index: int, tokenizer: type[Tokenizer]
) -> bool:
    """Whether ``tokens[index]`` is the rest of a statement the tokenizer kept as text.

    After a command word at the start of a statement (EXPLAIN, SHOW, CALL, ...)
    sqlglot's tokenizer turns everything up to ``;`` into one STRING token.
    """
    if index == 0 or tokens[index].token_type != TokenType.STRING:
        return False
    command = tokens[index - 1]
    before = tokens[index - 2].token_type if index >= 2 else TokenType.SEMICOLON
    return (
        command.token_type in tokenizer.COMMANDS
        and before in tokenizer.COMMAND_PREFIX_TOKENS
    )


def has_semantic_words(
    sql: str, infix: Mapping[str, str], functions: Collection[str]
) -> bool:
    """Whether ``sql`` uses an infix word or calls one of ``functions``.

    Uses the tokenizer, so a word inside a string literal or a comment does not
    count. SQL that cannot be tokenized counts as having none: DuckDB will then
    report the error itself.
    """
    words = {word.upper() for word in infix}
    names = {name.upper() for name in functions}
    dialect = make_dialect(infix)
    try:
        tokens = dialect.tokenize(sql)
    except SqlglotError:
        return False
    for index, token in enumerate(tokens):
        if _is_command_text(tokens, index, dialect.tokenizer_class):
            if has_semantic_words(token.text, infix, functions):
                return True
            continue
        if token.token_type in _LITERAL_TOKENS:
            continue
        text = token.text.upper()
        if token.token_type == TokenType.VAR and text in words:
            return True
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if (
            text in names
            and following is not None
            and following.token_type == TokenType.L_PAREN
        ):
            return True
    return False
