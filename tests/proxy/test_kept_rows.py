"""A semantic statement in proxy mode reads the rows its plain predicates keep from PostgreSQL once, in one snapshot."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess
from tests.fake_provider import FakeProvider, decide

WORDS = ["bamboo brush", "plastic fork", "steel bottle", "recycled paper", "silk scarf"]


def admin(pg: PostgresServer) -> str:
    return f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"


@pytest.fixture()
def shelves(upstream_pg: PostgresServer) -> Iterator[str]:
    """500 rows on 10 shelves, labels no other test judged."""
    table = f"shelves_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin(upstream_pg), autocommit=True) as pg:
        pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, shelf int NOT NULL, label text NOT NULL, note text)")
        pg.execute(
            f"INSERT INTO {table} SELECT g, g % 10, (ARRAY{WORDS!r})[1 + g % 5] || ' {table} ' || (g % 7), 'n' FROM generate_series(1, 500) g"
        )
    yield table
    with psycopg.connect(admin(upstream_pg), autocommit=True) as pg:
        pg.execute(f"DROP TABLE {table}")


def logged_since(upstream_pg: PostgresServer, before: int) -> list[str]:
    with (upstream_pg.dir / "log").open(errors="replace") as f:
        f.seek(before)
        return list(f)


Row = tuple[Any, ...]
# (statement over the table {t}, the rows it returns from (kept rows, their eco-friendly ones), names all columns)
CASES: dict[str, tuple[str, Callable[[list[Row], list[Row]], list[Row]], bool]] = {
    "where": (
        "SELECT id, label FROM {t} WHERE shelf = 3 AND label MEANS 'eco-friendly' ORDER BY id",
        lambda kept, eco: [(r[0], r[2]) for r in eco],
        False,
    ),
    "alias and NOT": (
        "SELECT s.id FROM {t} AS s WHERE s.shelf = 3 AND NOT s.label MEANS 'eco-friendly' ORDER BY s.id",
        lambda kept, eco: [(r[0],) for r in kept if r not in eco],
        False,
    ),
    "select list": (
        "SELECT id, label MEANS 'eco-friendly' AS eco FROM {t} WHERE shelf = 3 ORDER BY eco, id",
        lambda kept, eco: sorted(((r[0], r in eco) for r in kept), key=lambda x: (x[1], x[0])),
        False,
    ),
    "count": (
        "SELECT count(*) FROM {t} WHERE shelf = 3 AND label MEANS 'eco-friendly'",
        lambda kept, eco: [(len(eco),)],
        False,
    ),
    "star and limit": (
        "SELECT * FROM {t} WHERE shelf = 3 AND label MEANS 'eco-friendly' ORDER BY id LIMIT 5",
        lambda kept, eco: eco[:5],
        True,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_kept_rows_cross_once_and_answers_match_postgres(
    proxy_server: ServerProcess, upstream_pg: PostgresServer, shelves: str, provider: FakeProvider, case: str
) -> None:
    """One scan of the table, with its predicate and the named columns pushed down; the rows PostgreSQL gives."""
    sql, expected, every_column = CASES[case]
    with psycopg.connect(admin(upstream_pg), autocommit=True) as pg:
        rows = pg.execute(f"SELECT id, shelf, label, note FROM {shelves} ORDER BY id").fetchall()
        pg.execute("ALTER SYSTEM SET log_statement = 'all'")
        pg.execute("SELECT pg_reload_conf()")
    before = (upstream_pg.dir / "log").stat().st_size
    try:
        with proxy_server.connect(prepare_threshold=None) as c:
            got = c.execute(sql.format(t=shelves)).fetchall()
        scans = [line for line in logged_since(upstream_pg, before) if "COPY (SELECT" in line and shelves in line]
    finally:
        with psycopg.connect(admin(upstream_pg), autocommit=True) as pg:
            pg.execute("ALTER SYSTEM RESET log_statement")
            pg.execute("SELECT pg_reload_conf()")
    kept = [r for r in rows if r[1] == 3]
    eco = [r for r in kept if decide("eco-friendly", r[2])]
    assert got == expected(kept, eco)
    assert len(scans) == 1, scans
    assert "\"shelf\" = '3'" in scans[0]
    assert ('"note"' in scans[0]) is every_column  # only the columns the statement names
    assert provider.stats()["distinct_texts"] == len({r[2] for r in kept})


def test_a_row_committed_while_values_are_judged_is_not_seen(
    proxy_server: ServerProcess, upstream_pg: PostgresServer, shelves: str, provider: FakeProvider
) -> None:
    """The values judged ahead of the query and the query itself read one snapshot of the upstream."""
    inserted: list[int] = []

    def insert_once(attempt: int) -> None:
        if attempt == 1:
            with psycopg.connect(admin(upstream_pg), autocommit=True) as pg:
                pg.execute(f"INSERT INTO {shelves} VALUES (999, 4, 'a bamboo thing committed meanwhile', 'n')")
            inserted.append(attempt)

    provider.behaviour.on_request = insert_once
    try:
        with proxy_server.connect(prepare_threshold=None) as c:
            rows = c.execute(f"SELECT id, label MEANS 'eco-friendly' FROM {shelves} WHERE shelf = 4 ORDER BY id").fetchall()
            provider.behaviour.on_request = None
            assert inserted == [1]
            assert [i for i, _ in rows] == list(range(4, 501, 10))
            assert all(m is not None for _, m in rows)
            assert c.execute(f"SELECT count(*) FROM {shelves} WHERE shelf = 4").fetchone() == (51,)
            again = c.execute(f"SELECT id, label MEANS 'eco-friendly' FROM {shelves} WHERE id = 999").fetchall()
    finally:
        provider.behaviour.on_request = None
    assert again == [(999, True)]


def test_the_copy_is_gone_after_the_statement(proxy_server: ServerProcess, shelves: str, provider: FakeProvider) -> None:
    """Nothing of a statement's copy outlives it, after an error either."""
    with proxy_server.connect(prepare_threshold=None) as c:
        c.execute(f"SELECT id FROM {shelves} WHERE shelf = 5 AND label MEANS 'eco-friendly'").fetchall()
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute(f"SELECT id / 0 FROM {shelves} WHERE shelf = 5 AND label MEANS 'eco-friendly'").fetchall()
        with pytest.raises(psycopg.errors.UndefinedColumn, match='"nope"'):  # the copy would hold no column
            c.execute(f"SELECT count(*) FROM {shelves} WHERE shelf = 5 AND nope MEANS 'eco-friendly'").fetchall()
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM meansql_kept_rows WHERE 'a' MEANS 'b'").fetchall()
        assert c.execute(f"SELECT count(*) FROM {shelves} WHERE shelf = 5 AND label MEANS 'eco-friendly'").fetchone() == (
            sum(1 for g in range(5, 501, 10) if decide("eco-friendly", WORDS[g % 5])),
        )
