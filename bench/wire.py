"""Wire throughput: meansql next to a real PostgreSQL started by this script, same client, same machine.

Two figures, each with 1 and 16 client threads (one psycopg connection per thread, text format):

- streaming: rows per second of `SELECT i FROM generate_series(0::bigint, N - 1) AS g(i)`, N = 1,000,000
  (with 16 threads each thread fetches N / 16 rows, so the total is N); time from send to the last row
  converted by psycopg (`fetchall`). Goal: meansql >= 50% of PostgreSQL's rate.
- round trips: simple-query `SELECT 1` per second over `--seconds` seconds. Goal: >= 30% of PostgreSQL's.
  meansql answers a SELECT of integer literals (what pools and health checks send) without DuckDB, so the
  bench also times a statement that DuckDB runs: `SELECT v FROM bench_one WHERE k = 1` on a one-row table.

    .venv/bin/python -m bench.wire [--rows 1000000] [--seconds 3] [--only meansql|postgres]

The client runs in this process, so on a small machine its own CPU is part of both figures.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/wire.py`
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

THREADS = (1, 16)


class MeansqlProcess:
    """`meansql serve` on a fresh database in a scratch directory, its output in a log file."""

    def __init__(self, args: list[str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="meansql-bench-"))
        self.args = args or []
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60) -> MeansqlProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEANSQL_")}
        env.update({"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
        cmd = [sys.executable, "-m", "server.cli", "serve", "--db", str(self.dir / "bench.duckdb"), "--port", "0",
               *self.args]
        with self.log.open("wb") as out:
            # Run in the scratch directory: whatever the server writes relative to its cwd stays there.
            self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on [\d.]+:(\d+)", self.log.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("meansql did not start:\n" + self.log.read_text(errors="replace"))

    def wait_idle(self, window: float = 1.0, windows: int = 3, limit: float = 180.0) -> float:
        """Wait until the server is quiet (see wait_quiet; the embedding model loads on a thread after
        "listening"); returns the seconds waited."""
        assert self.proc is not None
        proc = self.proc
        return wait_quiet(proc.pid, window, windows, limit, alive=lambda: proc.poll() is None)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/default"

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return _cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    def stop(self) -> str:
        """Stop the server; returns its output."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        shutil.rmtree(self.dir, ignore_errors=True)
        return text


class GcTimes:
    """Collections per generation and the CPU they took (of the thread that ran them), while counting."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.ms = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.counts[info["generation"]] += 1
            self.ms[info["generation"]] += (time.thread_time() - self._started) * 1000

    def reset(self) -> None:
        self.counts, self.ms = [0, 0, 0], [0.0, 0.0, 0.0]

    def line(self, calls: int) -> str:
        return "gc " + ", ".join(f"gen{g} {n}x {ms / calls:.3f} ms/call" for g, (n, ms) in enumerate(zip(self.counts, self.ms)))


def _cpu_seconds(pid: int | str, children: bool = False) -> float:
    """User and system CPU seconds of a process, all its threads (and, with `children`, of its reaped children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int | str, window: float, windows: int, limit: float,
               alive: Callable[[], bool] = lambda: True) -> float:
    """Wait until a process burns at most two clock ticks in each of `windows` windows in a row (at most `limit`
    seconds, or until `alive` says it ended); returns the seconds waited."""
    started = time.monotonic()
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    quiet = 0
    while quiet < windows and time.monotonic() - started < limit and alive():
        before = _cpu_seconds(pid)
        time.sleep(window)
        quiet = quiet + 1 if _cpu_seconds(pid) - before <= 2 * tick else 0
    return time.monotonic() - started


def _in_threads(n: int, work: Callable[[int], int]) -> tuple[int, float]:
    """Run work(i) in n threads started together; (sum of results, wall seconds)."""
    barrier = threading.Barrier(n + 1)
    results = [0] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return sum(results), time.perf_counter() - start


def streaming(url: str, rows: int, threads: int) -> float:
    """Rows per second fetched through psycopg."""
    per = rows // threads
    conns = [psycopg.connect(url, autocommit=True) for _ in range(threads)]
    sql = f"SELECT i FROM generate_series(0::bigint, {per - 1}) AS g(i)"

    def work(i: int) -> int:
        got = conns[i].execute(sql).fetchall()
        assert len(got) == per and got[-1] == (per - 1,)
        return len(got)

    try:
        work(0)  # warm-up
        total, wall = _in_threads(threads, work)
    finally:
        for c in conns:
            c.close()
    return total / wall


ONE_ROW = "SELECT v FROM bench_one WHERE k = 1"


def round_trips(url: str, seconds: float, threads: int, sql: str = "SELECT 1") -> float:
    """Simple-query round trips per second (psycopg's automatic prepare is off: no extended protocol)."""
    conns = [psycopg.connect(url, autocommit=True, prepare_threshold=None) for _ in range(threads)]
    stop_at = [0.0]

    def work(i: int) -> int:
        conn, n = conns[i], 0
        while time.perf_counter() < stop_at[0]:
            conn.execute(sql).fetchone()
            n += 1
        return n

    try:
        for _ in range(50):
            conns[0].execute(sql)
        stop_at[0] = time.perf_counter() + seconds + 0.05  # the barrier releases within a few ms
        total, wall = _in_threads(threads, work)
    finally:
        for c in conns:
            c.close()
    return total / wall


def duckdb_floor(seconds: float) -> float:
    """The one-row read's `execute(...).fetchall()` per second on a DuckDB file cursor in this process: no wire,
    no server."""
    import duckdb

    tmp = Path(tempfile.mkdtemp(prefix="meansql-bench-"))
    try:
        cur = duckdb.connect(str(tmp / "floor.duckdb")).cursor()
        cur.execute("CREATE TABLE bench_one (k integer, v integer)")
        cur.execute("INSERT INTO bench_one VALUES (1, 1)")
        n, stop_at = 0, time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < stop_at:
            cur.execute(ONE_ROW).fetchall()
            n += 1
        return n / (time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(url: str, rows: int, seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in THREADS:
        out[f"stream rows/s, {n} thread{'s' if n > 1 else ''}"] = streaming(url, rows, n)
    for n in THREADS:
        out[f"SELECT 1 trips/s, {n} thread{'s' if n > 1 else ''}"] = round_trips(url, seconds, n)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_one")
        conn.execute("CREATE TABLE bench_one (k integer, v integer)")
        conn.execute("INSERT INTO bench_one VALUES (1, 1)")
    for n in THREADS:
        out[f"one-row read trips/s, {n} thr{'s' if n > 1 else ''}"] = round_trips(url, seconds, n, ONE_ROW)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--only", choices=["meansql", "postgres"])
    args = parser.parse_args(argv)

    figures: dict[str, dict[str, float]] = {}
    if args.only != "postgres":
        server = MeansqlProcess(["--log-level", "WARNING"]).start()
        try:
            server.wait_idle()  # measured in its steady state, not while start-up work runs on a thread
            figures["meansql"] = measure(server.url, args.rows, args.seconds)
        finally:
            server.stop()
    if args.only != "meansql":
        from tests.clients.conftest import PostgresServer

        pg = PostgresServer().start()
        try:
            figures["postgres"] = measure(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", args.rows,
                                          args.seconds)
        finally:
            pg.stop()

    names = list(next(iter(figures.values())))
    goals = {"stream": 0.5, "SELECT": 0.3, "one-row": 0.3}
    print(f"{'figure':<28}{'meansql':>12}{'postgres':>12}{'ratio':>8}{'goal':>7}")
    for name in names:
        ms, pg_ = figures.get("meansql", {}).get(name), figures.get("postgres", {}).get(name)
        ratio = f"{ms / pg_:.0%}" if ms and pg_ else "-"
        goal = f">={goals[name.split()[0]]:.0%}"
        print(f"{name:<28}{ms or 0:>12,.0f}{pg_ or 0:>12,.0f}{ratio:>8}{goal:>7}")
    floor = duckdb_floor(args.seconds)
    pg_one = figures.get("postgres", {}).get("one-row read trips/s, 1 thr")
    print(f"{'DuckDB one-row read/s':<28}{floor:>12,.0f}{pg_one or 0:>12,.0f}"
          f"{f'{floor / pg_one:.0%}' if pg_one else '-':>8}   (in-process, no wire: the ceiling of a DuckDB round trip)")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
