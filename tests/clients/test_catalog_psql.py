"""psql's meta-commands read pg_catalog; each runs against meansql and PostgreSQL."""

from __future__ import annotations

import itertools

import pytest

from tests.clients.conftest import Target
from tests.conftest import psql


@pytest.fixture()
def typed_table(target: Target, table_name: str) -> str:
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        conn.execute(f"CREATE TABLE {table_name} (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC(10,2), "
                     "seen TIMESTAMP, ok BOOLEAN, code VARCHAR(20))")
    return table_name


def _run(target: Target, *commands: str) -> str:
    result = psql(target.url, *commands)
    assert result.stderr == ""
    return result.stdout


def test_list_databases_and_schemas(target: Target) -> None:
    out = _run(target, r"\l", r"\dn")
    assert "List of databases" in out
    assert f" {target.dbname} " in out
    assert "List of schemas" in out
    assert " public " in out


def test_list_tables(target: Target, typed_table: str) -> None:
    out = _run(target, r"\dt")
    row = next(line for line in out.splitlines() if f" {typed_table} " in line)
    assert [cell.strip() for cell in row.split("|")][:3] == ["public", typed_table, "table"]


def test_describe_table(target: Target, typed_table: str) -> None:
    out = _run(target, rf"\d {typed_table}")
    assert f'Table "public.{typed_table}"' in out
    columns = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 5 and cells[0] not in ("Column", ""):
            columns[cells[0]] = (cells[1], cells[3])
    assert columns["id"] == ("integer", "not null")
    assert columns["name"] == ("text", "")
    assert columns["price"] == ("numeric(10,2)", "")
    assert columns["seen"] == ("timestamp without time zone", "")
    assert columns["ok"] == ("boolean", "")
    # DuckDB keeps no length on VARCHAR, and meansql sends it as text.
    assert columns["code"][0] in ("character varying(20)", "text")
    assert f'"{typed_table}_pkey" PRIMARY KEY, btree (id)' in out


def test_functions_and_expanded_display(target: Target, typed_table: str) -> None:
    out = _run(target, r"\df", r"\x", f"SELECT id, name FROM {typed_table}")
    assert "List of functions" in out
    assert "Expanded display is on." in out


@pytest.mark.parametrize("table", ["unified_logs", "training_annotations"])
def test_our_tables_are_listed(target: Target, table: str) -> None:
    if target.name != "meansql":
        pytest.skip("meansql's own tables")
    assert f" {table} " in _run(target, r"\dt")
    assert f'Table "public.{table}"' in _run(target, rf"\d {table}")


def test_our_views_are_listed(target: Target) -> None:
    if target.name != "meansql":
        pytest.skip("meansql's own views")
    assert " training_examples_mv " in _run(target, r"\dv")


def test_session_functions(target: Target) -> None:
    with target.connect() as conn:
        row = conn.execute("SELECT version(), current_database(), current_schema(), "
                           "current_setting('search_path'), current_user, pg_catalog.version()").fetchone()
    assert row is not None
    version, database, schema, search_path, user, qualified = row
    assert version.startswith("PostgreSQL 15") and qualified == version
    assert (database, schema, search_path, user) == (target.dbname, "public", '"$user", public', target.user)


def test_regclass_and_format_type(target: Target, typed_table: str) -> None:
    with target.connect() as conn:
        rows = conn.execute(
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 ORDER BY a.attnum", [typed_table]).fetchall()
        name = conn.execute("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relname = %s",
                            [typed_table]).fetchone()
    assert rows[:5] == [("id", "integer"), ("name", "text"), ("price", "numeric(10,2)"),
                        ("seen", "timestamp without time zone"), ("ok", "boolean")]
    assert name == (typed_table,)


@pytest.fixture()
def linked_tables(target: Target, table_name: str) -> tuple[str, str]:
    """A parent with a primary key and a unique column, and a child with a foreign key to each."""
    parent, child = f"{table_name}_p", f"{table_name}_c"
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {child}")
        conn.execute(f"DROP TABLE IF EXISTS {parent}")
        conn.execute(f"CREATE TABLE {parent} (id integer PRIMARY KEY, code text UNIQUE)")
        conn.execute(f"CREATE TABLE {child} (id integer, pid integer REFERENCES {parent}(id), pcode text, "
                     f"FOREIGN KEY (pcode) REFERENCES {parent} (code))")
    return parent, child


def _section(out: str, title: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index(title) + 1
    return [line.strip() for line in itertools.takewhile(lambda x: x.startswith("    "), lines[start:])]


def test_describe_table_foreign_keys(target: Target, linked_tables: tuple[str, str]) -> None:
    parent, child = linked_tables
    assert _section(_run(target, rf"\d {child}"), "Foreign-key constraints:") == [
        f'"{child}_pcode_fkey" FOREIGN KEY (pcode) REFERENCES {parent}(code)',
        f'"{child}_pid_fkey" FOREIGN KEY (pid) REFERENCES {parent}(id)',
    ]
    assert _section(_run(target, rf"\d {parent}"), "Referenced by:") == [
        f'TABLE "{child}" CONSTRAINT "{child}_pcode_fkey" FOREIGN KEY (pcode) REFERENCES {parent}(code)',
        f'TABLE "{child}" CONSTRAINT "{child}_pid_fkey" FOREIGN KEY (pid) REFERENCES {parent}(id)',
    ]


def test_pg_constraint_foreign_keys(target: Target, linked_tables: tuple[str, str]) -> None:
    parent, child = linked_tables
    with target.connect() as conn:
        rows = conn.execute(
            "SELECT conname, contype, confrelid = %s::regclass, conkey, confkey, pg_get_constraintdef(oid) "
            "FROM pg_catalog.pg_constraint WHERE conrelid = %s::regclass ORDER BY conname", [parent, child]).fetchall()
    assert rows == [
        (f"{child}_pcode_fkey", "f", True, [3], [2], f"FOREIGN KEY (pcode) REFERENCES {parent}(code)"),
        (f"{child}_pid_fkey", "f", True, [2], [1], f"FOREIGN KEY (pid) REFERENCES {parent}(id)"),
    ]


def test_drop_answers_with_its_tag(target: Target, table_name: str) -> None:
    with target.connect() as conn:
        created = conn.execute(f"CREATE TABLE {table_name}_d (x integer)")
        dropped = conn.execute(f"DROP TABLE {table_name}_d")
        again = conn.execute(f"DROP TABLE IF EXISTS {table_name}_d")
    assert [(c.statusmessage, c.description) for c in (created, dropped, again)] == [
        ("CREATE TABLE", None), ("DROP TABLE", None), ("DROP TABLE", None)]
