"""Wire fuzzing at scale: ≥ 100,000 generated messages over ≥ 50 concurrent connections to one meansql server.

The cases come from tests/fix_fuzz.py (the seeds, then generated startup packets and
frontend messages: truncated, length words 0..3 / 0x7FFFFFFF / negative, counts
0xFFFF, missing NULs, invalid UTF-8, wrong phase). Each case runs on its own
connection, which is half-closed after the bytes are sent; the server must close
it within 5 s. A control connection runs SELECT 1 every 20 ms; its p99 is
compared with the same connection's p99 on the idle server before the run.

    .venv/bin/python -m bench.fuzz_wire [--messages 100000] [--workers 50] [--seed 1] [--postgres]

`--postgres` runs the same cases against a PostgreSQL 15 started for the run (a database "default" created
in it) instead of meansql: the reference for what the machine allows, since the fuzzing threads share its
cores with the server. Its CPU is the postmaster's and its ended backends'. `--fuzz-elsewhere` starts a second
server of the same kind and fuzzes it while the controls ping the first, which does no other work: the control's
p99 then measures the machine's contention alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/fuzz_wire.py`
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.wire import MeansqlProcess, _cpu_seconds  # noqa: E402
from tests.fix_fuzz import Case, Control, cases, p99, run_many  # noqa: E402

PING_EVERY = 0.02  # seconds between a control's SELECT 1s, idle and during the run
IDLE_SECONDS = 20.0  # ~1,000 pings: the p99 of a few hundred is one or two outliers


def _control_process(port: int, pipe: Connection) -> None:
    """A control connection in a process of its own: its latencies are the server's, not those of this
    process's 50 fuzzing threads, which hold this interpreter's lock for up to 5 ms at a time."""
    control = Control("127.0.0.1", port)
    pipe.send("ready")
    while pipe.recv() == "start":
        while not pipe.poll(PING_EVERY):
            control.ping()
        pipe.recv()
        pipe.send((control.latencies, control.failures))
        control.latencies, control.failures = [], []


class _Postgres:
    """A PostgreSQL 15 for the reference run, with the database the cases log in to."""

    def __init__(self) -> None:
        from tests.clients.conftest import PostgresServer

        self.pg = PostgresServer()
        self.port = 0

    def start(self) -> _Postgres:
        self.pg.start()
        self.port = self.pg.port
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute('CREATE DATABASE "default"')
        self.pid = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        return self

    def wait_idle(self) -> None:
        time.sleep(1.0)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/default", autocommit=True)

    def cpu_seconds(self) -> float:
        """The postmaster's CPU and that of its ended backends (reaped: its children's times)."""
        return _cpu_seconds(self.pid, children=True)

    def alive(self) -> bool:
        return Path(f"/proc/{self.pid}").exists()

    def stop(self) -> str:
        log = (self.pg.dir / "log").read_text(errors="replace") if (self.pg.dir / "log").exists() else ""
        self.pg.stop()
        return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="frontend messages to send (100,000)")
    parser.add_argument("--workers", type=int, default=50, help="concurrent connections (50)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="cases started per second at most (default: as fast as the workers go). The control's "
                             "p99 of two servers compares only at the same rate: a faster server otherwise takes "
                             "more cases per second, and the control competes with more work")
    parser.add_argument("--postgres", action="store_true",
                        help="fuzz a PostgreSQL 15 started for the run instead of meansql (the reference)")
    parser.add_argument("--fuzz-elsewhere", action="store_true",
                        help="fuzz a second server of the same kind while the controls ping the first, idle one: what "
                             "the same fuzzing does to the control through the machine alone (its cores)")
    args = parser.parse_args(argv)

    all_cases: list[Case] = []
    sent = 0
    for case in cases(args.seed, 10**9):
        all_cases.append(case)
        sent += case.messages
        if sent >= args.messages:
            break

    load_before = os.getloadavg()
    server: MeansqlProcess | _Postgres = _Postgres().start() if args.postgres else \
        MeansqlProcess(["--log-level", "WARNING"]).start()
    fuzzed: MeansqlProcess | _Postgres = server
    if args.fuzz_elsewhere:
        fuzzed = _Postgres().start() if args.postgres else MeansqlProcess(["--log-level", "WARNING"]).start()
        fuzzed.wait_idle()
    try:
        server.wait_idle()  # the idle baseline is taken once start-up work on other threads is done
        for each in {id(server): server, id(fuzzed): fuzzed}.values():
            with each.connect() as conn:
                conn.execute("CREATE TABLE fuzz_t (a INT, b TEXT)")
        control = Control("127.0.0.1", server.port)
        pipe, child_end = multiprocessing.get_context("spawn").Pipe()
        apart = multiprocessing.get_context("spawn").Process(target=_control_process, args=(server.port, child_end),
                                                            daemon=True)
        apart.start()
        pipe.recv()

        def pinger(stop: threading.Event) -> None:
            while not stop.wait(PING_EVERY):
                control.ping()

        # The idle baseline: both controls at the cadence they keep during the run, for 6 s.
        stop = threading.Event()
        thread = threading.Thread(target=pinger, args=(stop,), daemon=True)
        pipe.send("start")
        thread.start()
        time.sleep(IDLE_SECONDS)
        stop.set()
        thread.join()
        pipe.send("stop")
        apart_idle = p99(pipe.recv()[0])
        idle = p99(control.latencies)
        control.latencies.clear()

        stop = threading.Event()
        thread = threading.Thread(target=pinger, args=(stop,), daemon=True)
        pipe.send("start")
        thread.start()
        started = time.perf_counter()
        cpu_before = fuzzed.cpu_seconds()
        last = [started]

        def progress(done: int) -> None:
            if done % 10_000 == 0:
                now = time.perf_counter()
                print(f"  {done:>7,} cases  {10_000 / (now - last[0]):,.0f} cases/s", flush=True)
                last[0] = now

        results = run_many("127.0.0.1", fuzzed.port, all_cases, args.workers, on_progress=progress,
                           rate=args.rate)
        elapsed = time.perf_counter() - started
        server_cpu = fuzzed.cpu_seconds() - cpu_before
        stop.set()
        thread.join()
        pipe.send("stop")
        apart_latencies, apart_failures = pipe.recv()
        pipe.send("exit")
        apart.join(10)
        alive = fuzzed.alive()
    finally:
        log = fuzzed.stop()
        if fuzzed is not server:
            server.stop()

    hung = sum(o.hung for _, o in results)
    wrong = [(c.data[:60], o.why) for c, o in results if not o.ok and not o.hung]
    fatal = sum(bool(o.fatal_codes) for _, o in results)
    tracebacks = log.count("Traceback")
    load = p99(control.latencies)
    print()
    print(f"server                {'PostgreSQL 15' if args.postgres else 'meansql':>10}"
          f"{'   (two: the controls ping one, idle; the fuzzing goes to the other)' if args.fuzz_elsewhere else ''}")
    print(f"cases                 {len(results):>10,}   ({sent:,} messages, {args.workers} connections at once"
          f"{f', at most {args.rate:,.0f} cases/s' if args.rate else ''})")
    print(f"time                  {elapsed:>10.1f} s  ({len(results) / elapsed:,.0f} cases/s, {sent / elapsed:,.0f} msgs/s)")
    print(f"server CPU            {server_cpu / len(results) * 1e3:>10.2f} ms per case  ({server_cpu / elapsed:.0%} of one "
          "core)")
    print(f"process crashes       {0 if alive else 1:>10}   (goal 0)")
    print(f"tracebacks in log     {tracebacks:>10}   (goal 0)")
    print(f"hung connections      {hung:>10}   (goal 0: closed within 5 s of EOF)")
    print(f"other bad answers     {len(wrong):>10}   {wrong[:3] if wrong else ''}")
    print(f"answered FATAL        {fatal:>10,}   (the rest were closed, or their input happened to be valid)")
    print(f"control SELECT 1      {len(control.latencies):>10,}   pings, {len(control.failures)} failed")
    print(f"control p99 idle      {idle * 1000:>10.2f} ms")
    print(f"control p99 fuzzing   {load * 1000:>10.2f} ms   ({load / idle:.1f}x idle; goal <= 2x)")
    apart_load = p99(apart_latencies)
    print(f"same, own process     {len(apart_latencies):>10,}   pings, {len(apart_failures)} failed; p99 idle "
          f"{apart_idle * 1000:.2f} ms, fuzzing {apart_load * 1000:.2f} ms ({apart_load / apart_idle:.1f}x idle)")
    print(f"load average          {' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after")
    ok = alive and not tracebacks and not hung and not wrong and not control.failures and not apart_failures
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
