"""Soak: many clients on a mixed workload for minutes, with a share of fuzz traffic, against one meansql server.

Each client loops over plain reads, writes (autocommit and in transactions, some rolled
back), parameterised statements (extended protocol), MEANS queries through litellm to
the loopback stand-in provider, annotation INSERTs, COPY out, statements that fail on
purpose, and reconnects now and then; with probability --fuzz per step it sends one
generated bad message sequence (tests/fix_fuzz.py) on a connection of its own.

Figures (RELIABILITY.md, soak): process crashes, tracebacks in the server log,
unexpected client errors, RSS after warm-up and at the end (growth < 10%), and the
server's thread count idle before, at peak, and once the clients have left
(back to the idle count ± 2).

    .venv/bin/python -m bench.soak [--minutes 10] [--clients 50] [--fuzz 0.01] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/soak.py`
    sys.path.insert(0, str(ROOT))

from bench.wire import MeansqlProcess  # noqa: E402
from tests.fake_provider import FakeProvider  # noqa: E402
from tests.fix_fuzz import cases, run_case  # noqa: E402

WORDS = ["bamboo", "steel", "plastic", "organic", "recycled", "leather", "glass", "cotton", "solar", "diesel"]
# Errors the workload causes on purpose, by SQLSTATE.
EXPECTED = {"22012", "42P01"}


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads of a process, from /proc."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


@dataclass
class Tally:
    ops: int = 0
    fuzz: int = 0
    fuzz_bad: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ops: int = 0, fuzz: int = 0, unexpected: str | None = None, fuzz_bad: str | None = None) -> None:
        with self.lock:
            self.ops += ops
            self.fuzz += fuzz
            if unexpected is not None and len(self.unexpected) < 50:
                self.unexpected.append(unexpected)
            if fuzz_bad is not None and len(self.fuzz_bad) < 50:
                self.fuzz_bad.append(fuzz_bad)


def _step(conn: psycopg.Connection[Any], rng: random.Random, client: int) -> None:
    roll = rng.random()
    if roll < 0.25:
        got = conn.execute("SELECT count(*), sum(n) FROM soak WHERE n %% %s = 0", [rng.randrange(1, 9)]).fetchone()
        assert got is not None and got[0] >= 0
    elif roll < 0.40:
        # The table keeps its size (a steady workload): rows are rewritten, or added and removed again.
        conn.execute("UPDATE soak SET d = %s WHERE n = %s", [rng.choice(WORDS), rng.randrange(10_000)])
    elif roll < 0.50:
        with conn.transaction(force_rollback=rng.random() < 0.5):
            conn.execute("INSERT INTO soak VALUES (%s, %s)", [-client - 1, "in a transaction"])
            got = conn.execute("SELECT count(*) FROM soak WHERE n = %s", [-client - 1]).fetchone()
            assert got == (1,)
            conn.execute("DELETE FROM soak WHERE n = %s", [-client - 1])
    elif roll < 0.65:
        value = f"{rng.choice(WORDS)} item {rng.randrange(200)}"
        rows = conn.execute("SELECT d MEANS 'eco-friendly' FROM (VALUES (%s)) v(d)", [value]).fetchall()
        assert len(rows) == 1 and rows[0][0] in (True, False)
    elif roll < 0.72:
        trace = conn.execute("SELECT trace_id FROM unified_logs USING SAMPLE 1 ROWS").fetchone()
        if trace is not None:
            conn.execute("INSERT INTO training_annotations (trace_id, trainable, verified, confidence, notes) "
                         "VALUES (%s, true, true, 0.9, 'soak')", [trace[0]])
    elif roll < 0.80:
        with conn.cursor().copy("COPY (SELECT n, d FROM soak LIMIT 500) TO STDOUT") as copy:
            size = sum(len(bytes(chunk)) for chunk in copy)
        assert size >= 0
    elif roll < 0.85:
        try:
            conn.execute("SELECT 1 / 0" if rng.random() < 0.5 else "SELECT * FROM no_such_table")
        except psycopg.Error as exc:
            if exc.sqlstate not in EXPECTED:
                raise
        assert conn.execute("SELECT 1").fetchone() == (1,)
    else:
        got = conn.execute("SELECT %s::int + 1, %s::text, now() IS NOT NULL", [client, "x"]).fetchone()
        assert got is not None and got[:2] == (client + 1, "x")


def _client(url: str, host: str, port: int, client: int, stop: threading.Event, tally: Tally, fuzz: float,
            seed: int) -> None:
    rng = random.Random(seed * 1000 + client)
    fuzz_cases = cases(seed * 1000 + client, 10**9)
    conn: psycopg.Connection[Any] | None = None
    steps = 0
    while not stop.is_set():
        try:
            if conn is None or rng.random() < 0.005:  # reconnect now and then
                if conn is not None:
                    conn.close()
                conn = psycopg.connect(url, autocommit=True)
            if rng.random() < fuzz:
                case = next(fuzz_cases)
                while case.phase == "startup" and rng.random() < 0.5:
                    case = next(fuzz_cases)
                outcome = run_case(host, port, case)
                tally.add(fuzz=1, fuzz_bad=None if outcome.ok else f"{outcome.why}: {case.data[:40]!r}")
                continue
            _step(conn, rng, client)
            steps += 1
            tally.add(ops=1)
        except Exception as exc:  # every failure is counted, and the client goes on with a new connection
            sqlstate = getattr(exc, "sqlstate", None)
            tally.add(unexpected=f"{type(exc).__name__} {sqlstate or ''}: {str(exc)[:200]}")
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def soak(minutes: float, clients: int, fuzz: float, warmup: float, seed: int = 1,
         report: Any = print) -> dict[str, Any]:
    """Run the soak; returns its figures."""
    load_before = os.getloadavg()
    provider = FakeProvider(defaults={"delay": 0.02}, backlog=1024).start()
    os.environ["OPENAI_API_KEY"] = "sk-soak"  # the stand-in takes any key
    config = Path(tempfile.mkdtemp(prefix="meansql-soak-")) / "meansql.yaml"
    config.write_text(json.dumps({"max_connections": 2 * clients + 20}))  # each client may hold a fuzz socket too
    server = MeansqlProcess(["--log-level", "WARNING", "--no-http", "--model", "openai/stand-in",
                             "--api-base", provider.url, "--config", str(config)])
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        with server.connect() as conn:
            conn.execute("CREATE TABLE soak (n BIGINT, d VARCHAR)")
            conn.execute("INSERT INTO soak SELECT i, 'seed ' || i FROM range(10000) t(i)")
            conn.execute("SELECT d MEANS 'eco-friendly' FROM (VALUES ('warm')) v(d)").fetchall()
        time.sleep(1.0)
        idle = proc_status(pid)
        report(f"idle: RSS {idle['VmRSS'] / 1024:.0f} MiB, {idle['Threads']} threads")
        stop, tally = threading.Event(), Tally()
        threads = [threading.Thread(target=_client, args=(server.url, "127.0.0.1", server.port, i, stop, tally, fuzz,
                                                          seed), daemon=True) for i in range(clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        peak_threads, samples = 0, []
        warm: dict[str, int] | None = None
        end = start + minutes * 60
        while time.monotonic() < end and server.proc.poll() is None:
            time.sleep(min(5.0, max(0.1, end - time.monotonic())))
            status = proc_status(pid)
            peak_threads = max(peak_threads, status["Threads"])
            elapsed = time.monotonic() - start
            samples.append((elapsed, status["VmRSS"]))
            if warm is None and elapsed >= warmup * 60:
                warm = status
                report(f"after warm-up ({elapsed:.0f} s): RSS {status['VmRSS'] / 1024:.0f} MiB, "
                       f"{tally.ops} ops, {tally.fuzz} fuzz cases")
        stop.set()
        for t in threads:
            t.join(30)
        wall = time.monotonic() - start
        crashed = server.proc.poll() is not None
        final = proc_status(pid) if not crashed else {"VmRSS": 0, "Threads": 0}
        # Sessions end as their clients leave; give the server a moment to see every close.
        deadline = time.monotonic() + 15
        after = final
        while not crashed and time.monotonic() < deadline:
            after = proc_status(pid)
            if abs(after["Threads"] - idle["Threads"]) <= 2:
                break
            time.sleep(0.5)
        if warm is None:
            warm = samples[len(samples) // 2][1] if samples else final["VmRSS"]  # type: ignore[assignment]
            warm = {"VmRSS": warm, "Threads": 0} if isinstance(warm, int) else warm
        log = server.stop()
        tracebacks = len(re.findall(r"^Traceback", log, re.M))
        figures = {
            "minutes": wall / 60, "clients": clients, "ops": tally.ops, "ops_per_s": tally.ops / wall,
            "fuzz_cases": tally.fuzz, "fuzz_bad": tally.fuzz_bad, "unexpected": tally.unexpected,
            "crashed": crashed, "tracebacks": tracebacks,
            "rss_idle_mib": idle["VmRSS"] / 1024, "rss_warm_mib": warm["VmRSS"] / 1024,
            "rss_end_mib": final["VmRSS"] / 1024,
            "rss_growth": (final["VmRSS"] - warm["VmRSS"]) / warm["VmRSS"] if warm["VmRSS"] else float("nan"),
            "threads_idle": idle["Threads"], "threads_peak": peak_threads, "threads_after": after["Threads"],
            "model_calls": provider.attempts, "load_before": load_before, "load_after": os.getloadavg(),
        }
        return figures
    finally:
        if server.proc is not None:
            server.stop()
        provider.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--fuzz", type=float, default=0.01, help="share of steps that send fuzz traffic (0.01)")
    parser.add_argument("--warmup", type=float, default=1.0, help="minutes before the RSS baseline (1)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    f = soak(args.minutes, args.clients, args.fuzz, args.warmup, args.seed)
    print(f"{f['minutes']:.1f} min, {f['clients']} clients: {f['ops']:,} operations ({f['ops_per_s']:.0f}/s), "
          f"{f['fuzz_cases']:,} fuzz cases, {f['model_calls']:,} model calls")
    print(f"crashed: {f['crashed']}; tracebacks in the log: {f['tracebacks']}; unexpected client errors: "
          f"{len(f['unexpected'])}; fuzz cases answered wrongly: {len(f['fuzz_bad'])}")
    for line in (f["unexpected"] + f["fuzz_bad"])[:10]:
        print("  ", line)
    print(f"RSS: idle {f['rss_idle_mib']:.0f} MiB, after warm-up {f['rss_warm_mib']:.0f} MiB, end "
          f"{f['rss_end_mib']:.0f} MiB: growth {f['rss_growth']:+.1%} (goal < 10%)")
    print(f"threads: idle {f['threads_idle']}, peak {f['threads_peak']}, after the clients left "
          f"{f['threads_after']} (goal: idle ± 2)")
    ok = (not f["crashed"] and not f["tracebacks"] and not f["unexpected"] and not f["fuzz_bad"]
          and f["rss_growth"] < 0.10 and abs(f["threads_after"] - f["threads_idle"]) <= 2)
    print(f"load average: {' '.join(f'{x:.2f}' for x in f['load_before'])} before, "
          f"{' '.join(f'{x:.2f}' for x in f['load_after'])} after (1, 5, 15 min)")
    print("all goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
