"""Proxy mode throughput: the same PostgreSQL, through `meansql serve --upstream` and directly, in one run.

(a) streaming of `--rows` rows and simple-query `SELECT 1` round trips, with 1 and 16 client threads, as
bench/wire.py measures them. Goals: round trips >= 60% of direct, streaming >= 80%.
(b) a MEANS query over a 100,000-row PostgreSQL table where a plain predicate keeps 1% of the rows: rows
PostgreSQL sent the scanner (pg_stat_statements' row count of its COPY queries) and model calls (the fake
provider's request log). Goal: only the kept rows cross, calls = their distinct values.
(c) cached MEANS queries per second through 1, 2 and 4 proxies sharing one PostgreSQL store (the upstream),
client threads spread over the proxies; the cache is warmed first, so the fake provider must record no call.

    .venv/bin/python -m bench.proxy [--rows 1000000] [--seconds 3] [--part a|b|c] [--clients 8]

The client runs in this process, so on a small machine its own CPU is part of both figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/proxy.py`
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.wire import THREADS, MeansqlProcess, round_trips, streaming  # noqa: E402

if TYPE_CHECKING:
    from tests.clients.conftest import PostgresServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--part", choices=["a", "b", "c"], help="one part only")
    parser.add_argument("--clients", type=int, default=8, help="(c): client threads, spread over the proxies")
    parser.add_argument("--rounds", type=int, default=3, help="(a): proxy and direct runs, alternating")
    args = parser.parse_args(argv)

    from tests.clients.conftest import PostgresServer

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    pg = PostgresServer().start()
    direct = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    try:
        if args.part in (None, "a"):
            throughput(direct, args.rows, args.seconds, args.rounds)
        if args.part in (None, "b"):
            print()
            head = f"(b) MEANS over {TABLE_ROWS:,} rows"
            print(f"{head:<36}{'kept':>7}{'distinct':>9}{'sent by PG':>11}{'scans':>6}{'requests':>9}{'judged':>8}")
            for name, kept, distinct, sent, scans, requests, judged, scan in pushdown(pg):
                print(f"{name:<36}{kept:>7,}{distinct:>9,}{sent:>11,}{scans:>6}{requests:>9,}{judged:>8,}")
                print(f"    scan: {scan[:160]}")
        if args.part in (None, "c"):
            print()
            scale_out(pg, args.clients, args.seconds, args.rounds)
    finally:
        pg.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(direct: str, rows: int, seconds: float, rounds: int) -> None:
    """Part (a): the same figures through the proxy, through a bare relay and directly, alternating, `rounds`
    times each; medians.

    On a shared machine the load moves between two runs: alternating keeps all three under the same load, and
    the proxy's own CPU time (per 1,000,000 rows streamed, per 1,000 round trips) is printed too. The bare
    relay (bench/bare_relay.py: read and send, nothing else) is what any relay in Python reaches here.
    """
    proxy = MeansqlProcess(["--log-level", "WARNING", "--no-http", "--upstream", direct]).start()
    assert proxy.proc is not None
    bare = subprocess.Popen([sys.executable, "-m", "bench.bare_relay", str(urlsplit(direct).port)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert bare.stdout is not None
    bare_port = int(bare.stdout.readline().rsplit(":", 1)[1])
    through: dict[str, list[float]] = {}
    relayed: dict[str, list[float]] = {}
    plain: dict[str, list[float]] = {}
    cost: dict[str, list[float]] = {}  # the proxy's CPU microseconds per row or per round trip
    try:
        via = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
        via_bare = f"postgresql://postgres@127.0.0.1:{bare_port}/postgres"
        streaming(via, min(rows, 100_000), 1)  # warm-up: imports, first connections
        streaming(via_bare, min(rows, 100_000), 1)
        for _ in range(rounds):
            for url, into in ((via, through), (via_bare, relayed), (direct, plain)):
                for n in THREADS:
                    name = f"stream rows/s, {n} thread{'s' if n > 1 else ''}"
                    before = cpu_seconds(proxy.proc.pid)
                    into.setdefault(name, []).append(streaming(url, rows, n))
                    if url == via:
                        cost.setdefault(name, []).append((cpu_seconds(proxy.proc.pid) - before) * 1e6 / rows)
                for n in THREADS:
                    name = f"SELECT 1 trips/s, {n} thread{'s' if n > 1 else ''}"
                    before = cpu_seconds(proxy.proc.pid)
                    into.setdefault(name, []).append(round_trips(url, seconds, n))
                    if url == via:
                        trips = into[name][-1] * seconds
                        cost.setdefault(name, []).append((cpu_seconds(proxy.proc.pid) - before) * 1e6 / trips)
    finally:
        proxy.stop()
        bare.kill()
        bare.wait()
    goals = {"stream": 0.8, "SELECT": 0.6}
    print(f"{'(a) median of ' + str(rounds):<28}{'proxy':>12}{'direct':>12}{'ratio':>8}{'goal':>7}{'proxy CPU':>11}"
          f"  ratio per round{'':<8}{'bare relay':>11}  its ratio per round")
    for name, values in through.items():
        value, base = statistics.median(values), statistics.median(plain[name])
        each = " ".join(f"{v / b:.0%}" for v, b in zip(values, plain[name]))
        bare_each = " ".join(f"{v / b:.0%}" for v, b in zip(relayed[name], plain[name]))
        unit = "row" if name.startswith("stream") else "trip"
        goal = ">=" + format(goals[name.split()[0]], ".0%")
        spent = f"{statistics.median(cost[name]):.1f} us/{unit}"
        print(f"{name:<28}{value:>12,.0f}{base:>12,.0f}{value / base:>8.0%}{goal:>7}{spent:>14}  {each:<23}"
              f"{statistics.median(relayed[name]) / base:>11.0%}  {bare_each}")


# -- (b) filter pushdown ------------------------------------------------------------------------------------
TABLE_ROWS = 100_000
SHELVES = 100  # `shelf = 7` keeps 1% of the rows
WORDS = ["bamboo brush", "plastic fork", "steel bottle", "recycled paper", "silk scarf", "cotton bag", "glass jar"]


def judged_values(requests: list[dict[str, Any]]) -> int:
    """Values the fake provider was asked about: one per request, or each numbered item of a batch prompt."""
    from tests.fake_provider import _BATCH_ITEM

    total = 0
    for request in requests:
        text = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
        total += len(_BATCH_ITEM.findall(text)) or 1
    return total


def pushdown(pg: PostgresServer) -> list[tuple[str, int, int, int, int, int, int, str]]:
    """Part (b), per query: rows kept, their distinct values, rows PostgreSQL sent the scanner in how many COPY
    queries, model requests, values judged; and the first COPY query."""
    from tests.clients.conftest import _pg_bin
    from tests.conftest import ServerProcess, server_env
    from tests.fake_provider import FakeProvider

    admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    pg._run(_pg_bin("pg_ctl"), "-D", str(pg.data), "-w", "-l", str(pg.dir / "log"), "restart")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        c.execute("DROP TABLE IF EXISTS wares")
        c.execute("CREATE TABLE wares (id int PRIMARY KEY, shelf int NOT NULL, label text NOT NULL, note text)")
        c.execute(
            f"INSERT INTO wares SELECT g, g % {SHELVES}, (ARRAY{WORDS!r})[1 + (g * 7 + g / 1000) % {len(WORDS)}] || ' ' || (g % 13), "
            f"repeat('x', 100) FROM generate_series(1, {TABLE_ROWS}) g"
        )
        c.execute("ANALYZE wares")
    provider = FakeProvider().start()
    server = ServerProcess(
        Path(tempfile.mkdtemp(prefix="meansql-bench-")) / "b.duckdb",
        server_env(provider),
        ["--log-level", "WARNING", "--no-http", "--upstream", admin],
    ).start()
    out = []
    try:
        queries = [
            ("shelf = 7 (pushed to PostgreSQL)", "shelf = 7"),
            ("id % 100 = 7 (applied by DuckDB)", "id % 100 = 7"),
        ]
        for i, (name, predicate) in enumerate(queries):
            criterion = f"eco-friendly {i}"  # its own criterion: no answer comes from the cache
            sql = f"SELECT id, label FROM wares WHERE {predicate} AND label MEANS '{criterion}'"
            with psycopg.connect(admin, autocommit=True) as c:
                kept, distinct = c.execute(f"SELECT count(*), count(DISTINCT label) FROM wares WHERE {predicate}").fetchone()
                c.execute("SELECT pg_stat_statements_reset()")
            provider.reset()
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres", autocommit=True) as c:
                c.execute(sql, prepare=False).fetchall()
            with psycopg.connect(admin, autocommit=True) as c:
                scans = c.execute(
                    "SELECT query, rows, calls FROM pg_stat_statements WHERE query LIKE 'COPY (SELECT%' ORDER BY rows DESC"
                ).fetchall()
            sent = sum(r for _, r, _ in scans)
            runs = sum(n for _, _, n in scans)
            requests = len(provider.requests)
            out.append((name, kept, distinct, sent, runs, requests, judged_values(provider.requests), scans[0][0] if scans else ""))
    finally:
        server.stop()
        provider.stop()
    return out


# -- (c) scale-out of cached queries ------------------------------------------------------------------------
PROXIES = (1, 2, 4)
KITS = 200  # rows of the table (c) reads; `id % 20 = 3` keeps 10, each a distinct label


def scale_out(pg: PostgresServer, clients: int, seconds: float, rounds: int) -> None:
    """Part (c): 4 proxies share the upstream as their store; 1, 2 and 4 of them serve `clients` threads.

    The query's answers are judged once before timing (through the first proxy, then read once through each of
    the others, from the shared store), so every timed query is a cache hit: the fake provider must record no
    request. The figure is queries per second over all clients, median of `rounds` runs per proxy count
    (counts alternate, as in (a)), next to the proxies' CPU time per query.
    """
    from tests.conftest import ServerProcess, server_env
    from tests.fake_provider import FakeProvider

    admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS kits")
        c.execute("CREATE TABLE kits (id int PRIMARY KEY, label text NOT NULL)")
        c.execute(f"INSERT INTO kits SELECT g, 'kit ' || g FROM generate_series(1, {KITS}) g")
    sql = "SELECT id, label FROM kits WHERE id % 20 = 3 AND label MEANS 'kit'"  # every kept row matches
    provider = FakeProvider().start()
    tmp = Path(tempfile.mkdtemp(prefix="meansql-bench-"))
    proxies = [
        ServerProcess(tmp / f"c{i}.duckdb", server_env(provider), ["--log-level", "WARNING", "--no-http", "--upstream", admin]).start()
        for i in range(max(PROXIES))
    ]
    rates: dict[int, list[float]] = {}
    cost: dict[int, list[float]] = {}
    try:
        for server in proxies:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres", autocommit=True) as c:
                assert len(c.execute(sql, prepare=False).fetchall()) == KITS // 20
        warmed = provider.stats()["requests"]
        assert warmed == KITS // 20, f"warming judged {warmed} values, expected {KITS // 20}"
        provider.reset()
        for _ in range(rounds):
            for n in PROXIES:
                used = proxies[:n]
                before = sum(cpu_seconds(s.proc.pid) for s in used if s.proc is not None)
                done = cached_queries([f"postgresql://postgres@127.0.0.1:{s.port}/postgres" for s in used], sql, clients, seconds)
                spent = sum(cpu_seconds(s.proc.pid) for s in used if s.proc is not None) - before
                rates.setdefault(n, []).append(done / seconds)
                cost.setdefault(n, []).append(spent * 1e3 / max(done, 1))
        calls = provider.stats()["requests"]
        assert calls == 0, f"{calls} model request(s) while timing: a query missed the cache"
    finally:
        for server in proxies:
            server.stop()
        provider.stop()
    base = statistics.median(rates[1])
    head = f"(c) cached MEANS, median of {rounds}"
    print(f"{head:<36}{'clients':>8}{'queries/s':>11}{'vs 1':>7}{'calls':>7}{'proxy CPU':>16}  queries/s per round")
    for n in PROXIES:
        value = statistics.median(rates[n])
        each = " ".join(f"{v:,.0f}" for v in rates[n])
        name = f"{n} prox{'ies' if n > 1 else 'y'}, one PostgreSQL store"
        spent = f"{statistics.median(cost[n]):.2f} ms/query"
        print(f"{name:<36}{clients:>8}{value:>11,.0f}{value / base:>7.2f}{calls:>7}{spent:>16}  {each}")
    print(f"    query: {sql}  ({KITS // 20} rows, {KITS // 20} cached answers each; {os.cpu_count()} CPUs)")


def cached_queries(urls: list[str], sql: str, clients: int, seconds: float) -> int:
    """Queries completed in `seconds` by `clients` threads, thread i connected to urls[i % len(urls)]."""
    done = [0] * clients
    errors: list[BaseException] = []
    conns = [psycopg.connect(urls[i % len(urls)], autocommit=True) for i in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def work(i: int) -> None:
        conn = conns[i]
        try:
            conn.execute(sql, prepare=False).fetchall()  # the connection's first semantic query makes its session
        finally:
            start.wait()
        try:
            while time.monotonic() < deadline[0]:
                conn.execute(sql, prepare=False).fetchall()
                done[i] += 1
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + seconds
    start.wait()
    for t in threads:
        t.join()
    for conn in conns:
        conn.close()
    if errors:
        raise errors[0]
    return sum(done)


if __name__ == "__main__":
    raise SystemExit(main())
