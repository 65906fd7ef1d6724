"""RowDescription's table OID and column number, from psycopg, against meansql and PostgreSQL."""

from __future__ import annotations

import psycopg

from tests.clients.conftest import Target


def _origins(cur: psycopg.Cursor[object]) -> list[tuple[int, int]]:
    result = cur.pgresult
    assert result is not None
    return [(result.ftable(i), result.ftablecol(i)) for i in range(result.nfields)]


def test_table_columns_name_their_table(target: Target, table_name: str) -> None:
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        conn.execute(f"CREATE TABLE {table_name} (id integer, name text, code varchar(8))")
        conn.execute(f"INSERT INTO {table_name} VALUES (1, 'a', 'x')")
        (oid,) = conn.execute("SELECT %s::regclass::oid", [table_name]).fetchone() or (0,)
        simple = conn.execute(f"SELECT name, id + 1 AS next, t.id, * FROM {table_name} t")
        simple_origins, simple_types = _origins(simple), [c.type_code for c in simple.description or []]
        extended = conn.execute(f"SELECT code, id FROM {table_name} WHERE id = %s", [1])
        extended_origins = _origins(extended)
        computed = _origins(conn.execute("SELECT 1 AS one, now() AS t"))
    assert oid != 0
    assert simple_origins == [(oid, 2), (0, 0), (oid, 1), (oid, 1), (oid, 2), (oid, 3)]
    assert extended_origins == [(oid, 3), (oid, 1)]
    assert computed == [(0, 0), (0, 0)]
    # DuckDB keeps no VARCHAR(n) apart from TEXT: meansql describes a varchar column as text (25), PostgreSQL
    # as varchar (1043).
    assert simple_types[-1] == (25 if target.name == "meansql" else 1043)
