"""Tests of the MEANS dialect and the rewrite into UDF calls.

The rewrite cases live in ``fixtures/means_rewrite.sql`` in the titled style of
sqlglot's optimizer fixtures: ``# title: ...``, the input SQL, the DuckDB SQL
expected after rewriting with token 'q1', a blank line between cases.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from duckdb.func import PythonUDFType
from sqlglot import exp

from semantic_ops.dialect import (
    SemanticCall,
    has_semantic_words,
    make_dialect,
    parse,
    to_duckdb,
)
from semantic_ops.errors import (
    SemanticSyntaxError,
    SemanticTypeError,
    UndefinedOperator,
)
from semantic_ops.rewrite import OperatorSignature, Plan, rewrite

FIXTURES = Path(__file__).parent / "fixtures"
INFIX = {"MEANS": "semantic_matches"}
MATCHES = OperatorSignature(
    name="semantic_matches",
    arg_names=("text", "criterion"),
    arg_types=("VARCHAR", "VARCHAR"),
    returns="BOOLEAN",
    infix="MEANS",
    udf_name="meansql_semantic_matches",
)
OPERATORS = {MATCHES.name: MATCHES}
FUNCTIONS = frozenset(OPERATORS)


def load_cases(name: str) -> list[tuple[str, str, str]]:
    """(title, input SQL, expected SQL) for each case of a fixture file."""
    cases = []
    for block in (FIXTURES / name).read_text().strip().split("\n\n"):
        title, sql, expected = block.strip().split("\n")
        assert title.startswith("# title: "), block
        cases.append((title.removeprefix("# title: "), sql, expected))
    return cases


CASES = load_cases("means_rewrite.sql")


def rewrite_sql(sql: str, token: str = "q1") -> tuple[str, Plan]:
    [statement] = parse(sql, INFIX)
    rewritten, plan = rewrite(statement, OPERATORS, token)
    return to_duckdb(rewritten), plan


@pytest.mark.parametrize(
    ("sql", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rewrite_fixture(sql: str, expected: str) -> None:
    assert rewrite_sql(sql)[0] == expected


@pytest.mark.parametrize("sql", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_round_trip_in_dialect(sql: str) -> None:
    """The tree printed in the MEANS dialect parses back to the same tree."""
    dialect = make_dialect(INFIX)
    [statement] = parse(sql, INFIX)
    printed = statement.sql(dialect=dialect)
    assert parse(printed, INFIX) == [statement]
    words = [tok for tok in dialect.tokenize(printed) if tok.text == "MEANS"]
    assert len(words) == len(list(statement.find_all(SemanticCall)))


def test_infix_parses_to_semantic_call() -> None:
    [statement] = parse("SELECT description MEANS 'eco' AS is_eco FROM products", INFIX)
    call = statement.find(SemanticCall)
    assert call is not None
    assert call.name == "semantic_matches"
    assert [arg.sql() for arg in call.expressions] == ["description", "'eco'"]
    assert statement.sql(dialect=make_dialect(INFIX)) == (
        "SELECT description MEANS 'eco' AS is_eco FROM products"
    )


def test_infix_and_function_form_rewrite_alike() -> None:
    infix, _ = rewrite_sql("SELECT description MEANS 'eco' FROM products")
    function, _ = rewrite_sql(
        "SELECT semantic_matches(description, 'eco') FROM products"
    )
    assert infix == function


def test_plan_lists_calls_in_reading_order() -> None:
    sql = (
        "WITH e AS (SELECT * FROM products WHERE description MEANS 'eco') "
        "SELECT * FROM e WHERE semantic_matches(means, 'green')"
    )
    _, plan = rewrite_sql(sql)
    assert plan.has_semantic
    assert plan.calls == (
        ("semantic_matches", ("description", "'eco'")),
        ("semantic_matches", ("means", "'green'")),
    )


def test_plain_sql_gives_copy_and_empty_plan() -> None:
    [statement] = parse("SELECT id FROM products WHERE id = 1", INFIX)
    rewritten, plan = rewrite(statement, OPERATORS, "q1")
    assert plan == Plan()
    assert not plan.has_semantic
    assert rewritten == statement
    assert rewritten is not statement


def test_rewrite_does_not_mutate_input() -> None:
    [statement] = parse("SELECT id FROM products WHERE description MEANS 'eco'", INFIX)
    before = statement.sql(dialect=make_dialect(INFIX))
    rewrite(statement, OPERATORS, "q1")
    assert statement.sql(dialect=make_dialect(INFIX)) == before
    assert statement.find(SemanticCall) is not None


def test_token_is_first_argument() -> None:
    sql, _ = rewrite_sql("SELECT d MEANS 'x' FROM t", token="it's")
    assert sql == "SELECT MEANSQL_SEMANTIC_MATCHES('it''s', d, 'x') FROM t"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT description MEANS",
        "SELECT description MEANS FROM products",
        "SELECT description MEANS, id FROM products",
        "SELECT lower(description MEANS) FROM products",
        "SELECT id FROM products WHERE description MEANS",
        "SELECT id FROM products WHERE description MEANS AND id > 1",
        "SELECT id FROM products WHERE description MEANS WHERE",
        "SELECT id FROM products WHERE (description means)",
    ],
)
def test_missing_criterion(sql: str) -> None:
    with pytest.raises(SemanticSyntaxError) as raised:
        parse(sql, INFIX)
    assert "MEANS needs a criterion after it" in raised.value.message
    assert raised.value.sqlstate == "42601"
    assert raised.value.position == sql.upper().index("MEANS") + 1


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        (
            "SELECT id FROM products WHERE description MEANS 42",
            "the number 42; write '42'",
        ),
        ("SELECT id FROM products WHERE description MEANS -1.5", "the number -1.5"),
        ("SELECT id FROM products WHERE description MEANS TRUE", "the boolean TRUE"),
    ],
)
def test_non_text_literal_criterion(sql: str, shown: str) -> None:
    with pytest.raises(SemanticTypeError) as raised:
        rewrite_sql(sql)
    assert raised.value.sqlstate == "42804"
    assert raised.value.message.startswith("MEANS needs text for criterion, got ")
    assert shown in raised.value.message
    assert raised.value.message.endswith("or cast it with ::TEXT")


def test_non_text_literal_in_function_form_names_the_function() -> None:
    with pytest.raises(
        SemanticTypeError, match="^semantic_matches needs text for text"
    ):
        rewrite_sql("SELECT semantic_matches(7, 'eco')")


def test_cast_number_is_accepted() -> None:
    sql, _ = rewrite_sql("SELECT description MEANS 42::TEXT FROM products")
    assert (
        sql == "SELECT MEANSQL_SEMANTIC_MATCHES('q1', description, CAST(42 AS TEXT)) "
        "FROM products"
    )


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("SELECT semantic_matches(description)", "is missing an argument"),
        ("SELECT semantic_matches()", "is missing an argument"),
        ("SELECT semantic_matches(a, 'b', 'c')", "has too many arguments"),
    ],
)
def test_wrong_arity_function_call(sql: str, words: str) -> None:
    with pytest.raises(SemanticSyntaxError) as raised:
        rewrite_sql(sql)
    assert words in raised.value.message
    assert "semantic_matches" in raised.value.message
    assert "(text, criterion)" in raised.value.message


def test_infix_word_without_signature_is_undefined() -> None:
    [statement] = parse("SELECT a RESEMBLES 'b'", {"RESEMBLES": "semantic_resembles"})
    with pytest.raises(UndefinedOperator):
        rewrite(statement, OPERATORS, "q1")


def test_operator_in_unparsed_statement_is_rejected() -> None:
    """sqlglot keeps EXPLAIN as raw text: say so rather than pass MEANS to DuckDB."""
    [statement] = parse("EXPLAIN SELECT * FROM products WHERE d MEANS 'x'", INFIX)
    assert isinstance(statement, exp.Command)
    with pytest.raises(SemanticSyntaxError, match="EXPLAIN"):
        rewrite(statement, OPERATORS, "q1")
    [plain] = parse("EXPLAIN SELECT 'a MEANS b'", INFIX)
    assert rewrite(plain, OPERATORS, "q1")[1] == Plan()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a FROM t WHERE b = 1",
        "SELECT a foo FROM t",
        "SELECT a foo, b bar FROM t WHERE c NOT LIKE 'x' AND d IS NOT NULL",
        "SELECT * FROM t AS means WHERE means.x IN (1, 2)",
        "SELECT a FROM t WHERE b BETWEEN 1 AND 2 ORDER BY a",
    ],
)
def test_unknown_word_in_range_position_leaves_sql_alone(sql: str) -> None:
    import sqlglot

    [ours] = parse(sql, INFIX)
    assert ours.sql(dialect="postgres") == sqlglot.parse_one(
        sql, dialect="postgres"
    ).sql(dialect="postgres")
    assert ours.find(SemanticCall) is None


def test_multi_statement_parse() -> None:
    statements = parse("SELECT 1; ; SELECT d MEANS 'x' FROM t;\n;", INFIX)
    assert [type(s) for s in statements] == [exp.Select, exp.Select]
    assert statements[1].find(SemanticCall) is not None
    assert parse("", INFIX) == []
    assert parse(" ; ", INFIX) == []


def test_parse_error_becomes_semantic_syntax_error() -> None:
    with pytest.raises(SemanticSyntaxError) as raised:
        parse("SELECT a FROM t WHERE", INFIX)
    assert raised.value.sqlstate == "42601"
    assert raised.value.position == len("SELECT a FROM t ") + 1
    with pytest.raises(SemanticSyntaxError):
        parse("SELECT 'unterminated", INFIX)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT d MEANS 'x' FROM t", True),
        ("select d means 'x' from t", True),
        ("SELECT semantic_matches(d, 'x')", True),
        ("SELECT SEMANTIC_MATCHES (d, 'x')", True),
        ("SELECT 'this MEANS that'", False),
        ("SELECT 'semantic_matches(a, b)'", False),
        ("SELECT a -- a MEANS b\nFROM t", False),
        ("SELECT a /* semantic_matches(a, b) */ FROM t", False),
        ("SELECT $$ a MEANS b $$", False),
        ("SELECT semantic_matches FROM t", False),
        ('SELECT "means" FROM t', False),
        ("CREATE TABLE t AS SELECT 1", False),
        ("PRAGMA table_info('t')", False),
        ("SELECT 'unterminated", False),
        ("EXPLAIN SELECT d MEANS 'x' FROM t", True),
        ("SELECT 1; explain SELECT semantic_matches(d, 'x')", True),
        ("EXPLAIN SELECT 'a MEANS b'", False),
        ("SHOW TABLES", False),
    ],
)
def test_has_semantic_words(sql: str, expected: bool) -> None:
    assert has_semantic_words(sql, INFIX, FUNCTIONS) is expected


def test_make_dialect_is_cached_per_mapping() -> None:
    assert make_dialect(INFIX) is make_dialect(dict(INFIX))
    assert make_dialect(INFIX) is make_dialect({"means": "semantic_matches"})
    assert make_dialect(INFIX) is not make_dialect({**INFIX, "RESEMBLES": "x"})


def test_make_dialect_rejects_keywords() -> None:
    with pytest.raises(ValueError, match="LIKE"):
        make_dialect({"LIKE": "semantic_like"})


def test_two_infix_words() -> None:
    infix = {**INFIX, "RESEMBLES": "semantic_resembles"}
    [statement] = parse("SELECT a MEANS 'x' AND b resembles 'y'", infix)
    assert [c.name for c in statement.find_all(SemanticCall)] == [
        "semantic_matches",
        "semantic_resembles",
    ]
    assert (
        statement.sql(dialect=make_dialect(infix))
        == "SELECT a MEANS 'x' AND b RESEMBLES 'y'"
    )


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE products(id INT, description VARCHAR, means VARCHAR)")
    con.execute(
        "INSERT INTO products VALUES "
        "(1, 'An eco-friendly bottle', 'green'), (2, 'A plastic bag', 'eco'), "
        "(3, NULL, NULL)"
    )
    con.create_function(
        "meansql_semantic_matches",
        lambda token, text, criterion: criterion.lower() in text.lower(),
        ["VARCHAR", "VARCHAR", "VARCHAR"],
        "BOOLEAN",
        type=PythonUDFType.NATIVE,
        side_effects=True,
    )
    return con


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT id FROM products WHERE description MEANS 'ECO' ORDER BY id", [(1,)]),
        (
            "SELECT id FROM products WHERE NOT description MEANS 'eco' ORDER BY id",
            [(2,)],
        ),
        (
            "SELECT id, description MEANS 'bag' AS is_bag FROM products ORDER BY id",
            [(1, False), (2, True), (3, None)],
        ),
        ("SELECT means FROM products WHERE means MEANS 'eco'", [("eco",)]),
        (
            (
                "WITH e AS (SELECT id FROM products "
                "WHERE semantic_matches(description, 'eco')) "
                "SELECT p.id FROM products AS p JOIN e ON e.id = p.id"
            ),
            [(1,)],
        ),
        (
            (
                "SELECT means, COUNT(*) FROM products GROUP BY means "
                "HAVING BOOL_OR(means MEANS 'green')"
            ),
            [("green", 1)],
        ),
        (
            (
                "SELECT CASE WHEN description MEANS 'plastic' THEN 'bad' ELSE 'ok' END "
                "FROM products ORDER BY id"
            ),
            [("ok",), ("bad",), ("ok",)],
        ),
    ],
)
def test_rewritten_sql_runs_in_duckdb(
    con: duckdb.DuckDBPyConnection, sql: str, rows: list[tuple[object, ...]]
) -> None:
    rewritten, plan = rewrite_sql(sql)
    assert plan.has_semantic
    assert con.execute(rewritten).fetchall() == rows


@pytest.mark.parametrize(
    ("sql", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_fixture_output_runs_in_duckdb(
    con: duckdb.DuckDBPyConnection, sql: str, expected: str
) -> None:
    con.execute(expected)
