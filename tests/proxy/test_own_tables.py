"""A semantic statement in proxy mode reads meansql's own tables (`unified_logs`, the training tables) by name."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg

from tests.clients.conftest import PostgresServer
from tests.conftest import ServerProcess, server_env
from tests.fake_provider import FakeProvider
from tests.proxy.conftest import pg_url


def test_means_over_the_log_and_the_training_views_of_the_postgresql_store(
    proxy_server: ServerProcess, upstream_pg: PostgresServer, provider: FakeProvider, items: tuple[str, str]
) -> None:
    table, tag = items
    with proxy_server.connect(prepare_threshold=None) as c:
        assert c.execute(f"SELECT id FROM {table} WHERE label MEANS 'steel' ORDER BY id").fetchall() == [(4,)]
        # The rows of that query's calls, judged again by their own text: unqualified, as in plain SQL.
        got = c.execute(
            "SELECT trace_id, user_input FROM unified_logs WHERE user_input LIKE %s AND user_input MEANS 'bamboo' ORDER BY user_input",
            [f"%{tag}"],
        ).fetchall()
        assert [u for _, u in got] == [f"bamboo brush {tag}", f"bamboo mat {tag}"]
        # They are PostgreSQL's rows: the trace ids of the meansql schema there.
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres") as pg:
            ids = pg.execute(
                "SELECT trace_id, user_input FROM meansql.unified_logs WHERE user_input LIKE %s AND criterion = 'steel'",
                [f"bamboo % {tag}"],
            ).fetchall()
        assert sorted(got) == sorted(ids)
        # An annotation written through the proxy (plain SQL) is read by a semantic statement over the views.
        c.execute(
            "INSERT INTO training_annotations (trace_id, trainable, verified, notes) VALUES (%s, true, true, 'kept')",
            [got[0][0]],
        )
        annotated = c.execute(
            "SELECT user_input, notes FROM training_examples_with_annotations WHERE trace_id = %s AND user_input MEANS 'bamboo'",
            [got[0][0]],
        ).fetchall()
        assert annotated == [(f"bamboo brush {tag}", "kept")]
        assert c.execute("SELECT count(*) FROM training_annotations WHERE trace_id = %s AND notes MEANS 'kept'", [got[0][0]]).fetchone() == (1,)


def test_a_table_of_the_application_named_like_one_of_meansqls_wins(
    proxy_server: ServerProcess, upstream_pg: PostgresServer, provider: FakeProvider
) -> None:
    """`public` comes first, as in PostgreSQL's search_path after `meansql db init`."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres", autocommit=True) as pg:
        pg.execute("CREATE TABLE public.judge_calibration (note text)")
        pg.execute("INSERT INTO public.judge_calibration VALUES ('bamboo cup'), ('steel cup')")
    try:
        with proxy_server.connect(prepare_threshold=None) as c:
            assert c.execute("SELECT note FROM judge_calibration WHERE note MEANS 'bamboo'").fetchall() == [("bamboo cup",)]
    finally:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{upstream_pg.port}/postgres", autocommit=True) as pg:
            pg.execute("DROP TABLE public.judge_calibration")


def test_with_the_store_in_the_duckdb_file_the_log_is_the_files(
    upstream_pg: PostgresServer, provider: FakeProvider, items: tuple[str, str]
) -> None:
    table, tag = items
    tmp = Path(tempfile.mkdtemp(prefix="meansql-own-"))
    server = ServerProcess(tmp / "own.duckdb", server_env(provider), ["--upstream", pg_url(upstream_pg), "--store-url", "duckdb"]).start()
    try:
        with server.connect(prepare_threshold=None) as c:
            assert c.execute(f"SELECT id FROM {table} WHERE label MEANS 'steel' ORDER BY id").fetchall() == [(4,)]
            got = c.execute(
                "SELECT user_input FROM unified_logs WHERE user_input LIKE %s AND user_input MEANS 'bamboo' ORDER BY user_input",
                [f"%{tag}"],
            ).fetchall()
        assert got == [(f"bamboo brush {tag}",), (f"bamboo mat {tag}",)]
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
