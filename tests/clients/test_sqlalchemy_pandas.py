"""SQLAlchemy 2 (psycopg) reflection and a pandas round trip, against meansql and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from tests.clients.conftest import Target


@pytest.fixture()
def engine(target: Target) -> Iterator[Engine]:
    eng = create_engine(target.url.replace("postgresql://", "postgresql+psycopg://"))
    yield eng
    eng.dispose()


def test_server_version_is_parsed(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    assert engine.dialect.server_version_info is not None
    assert engine.dialect.server_version_info[0] >= 15
    assert engine.dialect.default_schema_name == "public"


def test_inspect_tables_columns_keys(target: Target, engine: Engine, table_name: str) -> None:
    parent = f"{table_name}_p"
    with target.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table_name}")
        conn.execute(f"DROP TABLE IF EXISTS {parent}")
        conn.execute(f"CREATE TABLE {parent} (id INTEGER PRIMARY KEY)")
        conn.execute(f"CREATE TABLE {table_name} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     f"price NUMERIC(10,2), seen TIMESTAMP, ok BOOLEAN, ref INTEGER REFERENCES {parent}(id))")
    ins = inspect(engine)
    assert {table_name, parent} <= set(ins.get_table_names())
    columns = [(c["name"], str(c["type"]), c["nullable"]) for c in ins.get_columns(table_name)]
    assert columns == [("id", "INTEGER", False), ("name", "TEXT", False), ("price", "NUMERIC(10, 2)", True),
                       ("seen", "TIMESTAMP", True), ("ok", "BOOLEAN", True), ("ref", "INTEGER", True)]
    pk = ins.get_pk_constraint(table_name)
    assert pk["constrained_columns"] == ["id"] and pk["name"] == f"{table_name}_pkey"
    (fk,) = ins.get_foreign_keys(table_name)
    assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (["ref"], parent, ["id"])
    assert ins.has_table(table_name) and not ins.has_table(f"{table_name}_missing")


def test_pandas_round_trip(engine: Engine, table_name: str) -> None:
    df = pd.DataFrame({"i": [1, 2, 3], "f": [1.5, 2.5, None], "s": ["a", "b", None], "b": [True, False, True]})
    df.to_sql(table_name, engine, if_exists="replace", index=False)
    back = pd.read_sql(f"SELECT * FROM {table_name} ORDER BY i", engine)
    assert back["i"].tolist() == [1, 2, 3]
    assert back["f"].tolist()[:2] == [1.5, 2.5] and pd.isna(back["f"].iloc[2])
    assert back["s"].tolist()[:2] == ["a", "b"]
    assert back["b"].tolist() == [True, False, True]
    columns = {c["name"]: str(c["type"]) for c in inspect(engine).get_columns(table_name)}
    assert columns == {"i": "BIGINT", "f": "DOUBLE PRECISION", "s": "TEXT", "b": "BOOLEAN"}
    # if_exists="append" reads the table back first
    df.to_sql(table_name, engine, if_exists="append", index=False)
    assert pd.read_sql(f"SELECT count(*) AS n FROM {table_name}", engine)["n"].tolist() == [6]
