"""Bench of the semantic operator over the wire: calls, wall time and server CPU per scenario.

Each scenario starts a real `meansql serve` subprocess on a fresh DuckDB file (except (c), which runs (b)
again on the same server), loads a table ``items(id INT, price DOUBLE, d VARCHAR)`` over psycopg, and times
one MEANS query as the client sees it. The model is the loopback stand-in provider (`tests/fake_provider.py`),
run as its own subprocess and answering after 0.3 s; its counters say how many requests the server sent.
Server CPU is utime+stime of the server process (all its threads) from /proc/<pid>/stat.

    .venv/bin/python -m bench.semantic [--only a,b,...] [--rows N] [--json out.json]

See bench/README.md for what each scenario measures and its goal.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/semantic.py`
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from tests.fake_provider import KEYWORDS, decide  # noqa: E402

DELAY = 0.3                # seconds the stand-in takes per answer
CONCURRENCY = 64           # the server's default max_concurrency
LIMITED_INFLIGHT = 8       # provider limit in scenario (h)
CRITERION = "eco-friendly"
QUERY = f"SELECT id FROM items WHERE d MEANS '{CRITERION}'"
SCENARIOS = "abcdefgh"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- data ----------------------------------------------------------------------------------------------
ECO_WORDS = KEYWORDS[CRITERION]
PLAIN_MATERIALS = ("plastic", "steel", "nylon", "leather", "glass", "aluminium", "polyester", "vinyl")
ADJECTIVES = ("durable", "compact", "classic", "bright", "heavy", "light", "modern", "vintage", "sturdy", "slim")
NOUNS = ("water bottle", "toothbrush", "t-shirt", "fork", "backpack", "notebook", "lamp", "chair", "phone case",
         "yoga mat", "lunch box", "umbrella", "pen")


def is_eco(i: int) -> bool:
    return i % 10 in (0, 3, 6)  # 30 %


def text(i: int) -> str:
    """A distinct product text per i; 30 % of them carry a keyword of the criterion."""
    material = ECO_WORDS[(i // 10) % len(ECO_WORDS)] if is_eco(i) else PLAIN_MATERIALS[(i // 10) % len(PLAIN_MATERIALS)]
    return f"{ADJECTIVES[i % len(ADJECTIVES)]} {material} {NOUNS[(i // 3) % len(NOUNS)]}, model {i}"


def price(i: int) -> float:
    """10 % of rows cost under 10, independently of whether they are eco."""
    if (i // 10) % 10 == 4:
        return 5.0 + i % 5
    return 10.0 + (i * 37) % 90


@dataclass
class Dataset:
    rows: list[tuple[int, float, str]]

    @classmethod
    def distinct(cls, n: int) -> Dataset:
        return cls([(i, price(i), text(i)) for i in range(n)])

    @classmethod
    def repeated(cls, n: int, values: int) -> Dataset:
        return cls([(i, price(i), text(i % values)) for i in range(n)])

    def matching(self, where: Callable[[tuple[int, float, str]], bool] = lambda r: True) -> set[int]:
        return {r[0] for r in self.rows if where(r) and decide(CRITERION, r[2])}

    def distinct_values(self, where: Callable[[tuple[int, float, str]], bool] = lambda r: True) -> int:
        return len({r[2] for r in self.rows if where(r)})


# -- processes -----------------------------------------------------------------------------------------
def proc_cpu_ms(pid: int) -> float | None:
    """utime+stime of a process, all its threads included, in ms (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def thread_cpu_ms(pid: int) -> dict[str, float]:
    """CPU ms of each live thread of a process, by "comm/tid" (Python does not name its native threads)."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK
    return out


def _wait_for_line(proc: subprocess.Popen[bytes], log: Path, pattern: str, timeout: float) -> re.Match[str] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_text(errors="replace") if log.exists() else ""
        m = re.search(pattern, out)
        if m:
            return m
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Provider:
    """`python -m tests.fake_provider` in its own process, driven over HTTP."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "provider.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Provider:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.fake_provider", "--port", "0", "--delay", str(DELAY),
                                          "--nodelay", "--backlog", "1024"],
                                         cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        m = _wait_for_line(self.proc, self.log, r"stand-in provider at (http://\S+)", 30)
        if not m:
            _stop(self.proc)
            raise RuntimeError("stand-in provider did not start:\n" + self.log.read_text(errors="replace"))
        self.url = m.group(1)
        return self

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.root + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def reset(self, **behaviour: Any) -> None:
        self._call("POST", "/_reset")
        if behaviour:
            self._call("POST", "/_control", behaviour)

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_stats"))

    def request_times(self) -> list[float]:
        """Arrival time (time.time()) of each request received since the last reset."""
        return sorted(float(r["t"]) for r in self._call("GET", "/_requests"))

    def cpu_ms(self) -> float | None:
        return proc_cpu_ms(self.proc.pid) if self.proc else None

    def stop(self) -> None:
        _stop(self.proc, grace=5)


def provider_self_check(provider: Provider, n: int = 640, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    """n requests, `concurrency` at a time, straight at the provider: how far from ceil(n/c) × delay is it?"""
    provider.reset()
    host, port = provider.root.removeprefix("http://").split(":")
    local = threading.local()

    def one(i: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        body = json.dumps({"model": "x", "messages": [{"role": "user", "content": f"Criterion: {CRITERION}\nText: {text(i)}"}]})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        conn.getresponse().read()

    cpu0 = provider.cpu_ms() or 0.0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    cpu = (provider.cpu_ms() or 0.0) - cpu0
    stats = provider.stats()
    provider.reset()
    ideal = math.ceil(n / concurrency) * DELAY
    return {"requests": n, "concurrency": concurrency, "wall_s": round(wall, 3), "ideal_s": round(ideal, 3),
            "ratio": round(wall / ideal, 3), "provider_cpu_ms_per_request": round(cpu / n, 3),
            "max_seen_inflight": stats["max_seen_inflight"]}


class StartupFailed(Exception):
    pass


class Server:
    """One `meansql serve` subprocess over a DuckDB file in its own directory."""

    def __init__(self, workdir: Path, provider: Provider, args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.db = workdir / "meansql.duckdb"
        self.log = workdir / "server.log"
        self.provider = provider
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEANSQL_")}
        env.update({"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MEANSQL_MODEL": "openai/stand-in",
                    "MEANSQL_API_BASE": self.provider.url, "OPENAI_API_KEY": "sk-bench"})
        cmd = [sys.executable, "-m", "server.cli", "serve", "--db", str(self.db), "--port", "0", *self.args]
        with self.log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        m = _wait_for_line(self.proc, self.log, r"listening on [\d.]+:(\d+)", timeout)
        if not m:
            self.kill()
            raise StartupFailed(self.failure_line())
        self.port = int(m.group(1))
        # litellm is imported and warmed up on a thread after "listening"; on a loaded machine that
        # thread can be starved long enough to look idle, and its CPU would count as the query's.
        _wait_for_line(self.proc, self.log, r"model calls ready", timeout)
        self.wait_idle()
        return self

    def failure_line(self) -> str:
        out = self.output().replace(f"{self.workdir}/", "")
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.match(r"(error|Error)", ln) or "Error:" in ln]
        return errors[-1] if errors else (lines[-1] if lines else "no output")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_ms(self) -> float | None:
        return proc_cpu_ms(self.proc.pid) if self.proc else None

    def thread_cpu_ms(self) -> dict[str, float]:
        return thread_cpu_ms(self.proc.pid) if self.proc else {}

    def wait_idle(self, window: float = 0.3, limit: float = 30.0) -> None:
        """Until the server burns at most one clock tick in a window (or limit seconds pass)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.alive:
            before = self.cpu_ms()
            time.sleep(window)
            after = self.cpu_ms()
            if before is None or after is None or after - before <= 1000.0 / CLK_TCK:
                return

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(f"postgresql://localhost:{self.port}/default", autocommit=True, connect_timeout=10)

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        _stop(self.proc)


# -- one query, bounded ------------------------------------------------------------------------------
@dataclass
class Outcome:
    rows: list[tuple[Any, ...]] | None = None
    wall: float = 0.0
    sqlstate: str | None = None
    error: str | None = None
    timed_out: bool = False
    started_at: float = 0.0  # time.time() when the query was sent
    notices: list[str] = field(default_factory=list)


def run_bounded(server: Server, conn: psycopg.Connection[Any], sql: str, timeout: float) -> Outcome:
    """Run sql on conn in a thread; after timeout seconds cancel it, kill the server and give up."""
    outcome = Outcome()
    conn.add_notice_handler(lambda d: outcome.notices.append(f"{d.severity}: {d.message_primary}"))

    def work() -> None:
        outcome.started_at = time.time()
        t0 = time.perf_counter()
        try:
            cur = conn.execute(sql)
            outcome.rows = cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            outcome.sqlstate = exc.sqlstate
            outcome.error = (exc.diag.message_primary or str(exc)).strip()
        except Exception as exc:  # never let the bench die on a client surprise
            outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            outcome.wall = time.perf_counter() - t0

    thread = threading.Thread(target=work, name="bench-query", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        outcome.timed_out = True
        try:
            conn.cancel()
        except Exception:
            pass
        server.kill()
        thread.join(15)
        outcome.rows = None
        outcome.wall = timeout
        outcome.sqlstate = None
        outcome.error = f"no answer after {timeout:.0f} s: query given up, server killed"
    return outcome


def load(server: Server, data: Dataset, timeout: float) -> float:
    """CREATE and fill items over the wire; returns seconds taken."""
    t0 = time.perf_counter()
    conn = server.connect()
    try:
        statements = ["CREATE TABLE items (id INT, price DOUBLE, d VARCHAR)"]
        for start in range(0, len(data.rows), 1000):
            chunk = data.rows[start:start + 1000]
            values = ", ".join(f"({i}, {p!r}, '{d.replace(chr(39), chr(39) * 2)}')" for i, p, d in chunk)
            statements.append(f"INSERT INTO items VALUES {values}")
        for sql in statements:
            out = run_bounded(server, conn, sql, timeout)
            if out.error:
                raise RuntimeError(f"loading items failed: {out.sqlstate or ''} {out.error}")
    finally:
        conn.close()
    return time.perf_counter() - t0


# -- scenarios -----------------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    sql: str = ""
    calls: int | None = None
    distinct: int | None = None
    wall_s: float | None = None
    floor_s: float | None = None
    ratio: float | None = None
    cpu_ms_per_call: float | None = None
    cpu_ms_total: float | None = None
    cpu_ms_by_thread: dict[str, float] = field(default_factory=dict)
    max_inflight: int | None = None
    rows_returned: int | None = None
    rows_expected: int | None = None
    check: str = "-"
    check_ok: bool = False
    goal: str = ""
    goal_met: bool = False
    note: str = ""
    sqlstate: str | None = None
    error: str | None = None
    setup_s: float | None = None
    load_avg_1m: float | None = None  # of the machine, right after the query
    first_call_after_s: float | None = None
    last_call_after_s: float | None = None
    after_last_answer_s: float | None = None
    provider_cpu_ms: float | None = None
    provider_distinct_texts: int | None = None
    notices: list[str] = field(default_factory=list)
    server_log_tail: str | None = None


def floor_s(distinct: int, concurrency: int) -> float:
    return math.ceil(distinct / concurrency) * DELAY if distinct else 0.0


def check_rows(rows: list[tuple[Any, ...]] | None, expected: set[int], limit: int | None) -> tuple[str, bool]:
    if rows is None:
        return "-", False
    ids = [r[0] for r in rows]
    got = set(ids)
    if limit is not None:
        want = min(limit, len(expected))
        ok = len(ids) == want and len(got) == len(ids) and got <= expected
        return f"{len(ids)}/{want} " + ("ok" if ok else f"WRONG ({len(got - expected)} not matching)"), ok
    ok = len(ids) == len(expected) and got == expected
    if ok:
        return f"{len(ids)}/{len(expected)} ok", True
    return f"{len(ids)}/{len(expected)} WRONG (+{len(got - expected)} -{len(expected - got)})", False


class Bench:
    def __init__(self, args: argparse.Namespace, provider: Provider, workroot: Path) -> None:
        self.args = args
        self.n: int = args.rows
        self.provider = provider
        self.workroot = workroot
        self.servers: list[Server] = []
        self.rows: dict[str, Row] = {}
        self.kept: Server | None = None  # (b)'s server, for (c)
        self.b_data = Dataset([])

    def new_server(self, name: str, prepare: Callable[[Path], list[str]] | None = None) -> Server:
        """A fresh server on a fresh database; prepare(workdir) may write files and returns extra serve flags."""
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workroot))
        extra = prepare(workdir) if prepare else []
        server = Server(workdir, self.provider, extra)
        self.servers.append(server)
        return server.start()

    def measure(self, row: Row, server: Server, sql: str, *, data: Dataset, distinct: int, concurrency: int,
                expected: set[int], limit: int | None = None, behaviour: dict[str, Any] | None = None) -> Row:
        row.sql, row.distinct = sql, distinct
        row.floor_s = floor_s(distinct, concurrency)
        row.rows_expected = min(limit, len(expected)) if limit is not None else len(expected)
        self.provider.reset(**(behaviour or {}))
        server.wait_idle()
        conn = server.connect()
        try:
            threads0 = server.thread_cpu_ms()
            cpu0, pcpu0 = server.cpu_ms(), self.provider.cpu_ms()
            out = run_bounded(server, conn, sql, self.args.timeout)
            if server.alive:
                time.sleep(0.5)  # work the server does right after answering (log writes, callbacks) counts too
            cpu1, pcpu1 = server.cpu_ms(), self.provider.cpu_ms()
            threads1 = server.thread_cpu_ms()
        finally:
            try:
                conn.close()
            except Exception:
                pass
        if self.provider.stats()["inflight"]:
            time.sleep(1.0)  # requests the server left behind (timeouts) still count
        stats = self.provider.stats()
        times = self.provider.request_times() if stats["attempts"] else []
        if times and out.started_at:
            row.first_call_after_s = times[0] - out.started_at
            row.last_call_after_s = times[-1] - out.started_at
            # from the last request's answer (DELAY after it arrived) to the client having all rows
            row.after_last_answer_s = out.wall - row.last_call_after_s - DELAY
        row.load_avg_1m = load_average()
        row.calls = stats["attempts"]
        row.max_inflight = stats["max_seen_inflight"]
        row.provider_distinct_texts = stats["distinct_texts"]
        row.wall_s = out.wall
        row.ratio = out.wall / row.floor_s if row.floor_s else None
        if cpu0 is not None and cpu1 is not None:
            row.cpu_ms_total = cpu1 - cpu0
            row.cpu_ms_per_call = row.cpu_ms_total / row.calls if row.calls else None
        if pcpu0 is not None and pcpu1 is not None:
            row.provider_cpu_ms = pcpu1 - pcpu0
        row.notices = out.notices
        # Threads that ended during the query are in cpu_ms_total but not here.
        by_thread = {k: v - threads0.get(k, 0.0) for k, v in threads1.items()}
        row.cpu_ms_by_thread = dict(sorted(((k, v) for k, v in by_thread.items() if v > 0), key=lambda kv: -kv[1])[:8])
        row.sqlstate, row.error = out.sqlstate, out.error
        row.rows_returned = len(out.rows) if out.rows is not None else None
        row.check, row.check_ok = check_rows(out.rows, expected, limit)
        if out.error:
            row.note = (f"SQLSTATE {out.sqlstate}: " if out.sqlstate else "") + out.error
            row.server_log_tail = server.output()[-3000:]
        elif row.first_call_after_s is not None and row.after_last_answer_s is not None:
            row.note = f"1st call at {row.first_call_after_s:.2f} s, {row.after_last_answer_s:.2f} s after last answer"
        return row

    # Each scenario returns its row; goals are judged in judge().
    def a(self, row: Row) -> Row:
        data = Dataset.distinct(self.n)
        server = self.new_server("a")
        row.setup_s = load(server, data, self.args.timeout)
        return self.measure(row, server, QUERY, data=data, distinct=data.distinct_values(), concurrency=CONCURRENCY,
                            expected=data.matching())

    def b(self, row: Row) -> Row:
        data = Dataset.repeated(10 * self.n, min(50, self.n))
        server = self.new_server("b")
        row.setup_s = load(server, data, self.args.timeout)
        self.kept = server
        self.b_data = data
        return self.measure(row, server, QUERY, data=data, distinct=data.distinct_values(), concurrency=CONCURRENCY,
                            expected=data.matching())

    def c(self, row: Row) -> Row:
        if self.kept is None or not self.kept.alive:
            row.note = "needs (b)'s server, which is not running"
            row.error = row.note
            return row
        data = self.b_data
        return self.measure(row, self.kept, QUERY, data=data, distinct=data.distinct_values(), concurrency=CONCURRENCY,
                            expected=data.matching())

    def d(self, row: Row) -> Row:
        data = Dataset.distinct(self.n)
        server = self.new_server("d")
        row.setup_s = load(server, data, self.args.timeout)
        return self.measure(row, server, QUERY + " LIMIT 5", data=data, distinct=data.distinct_values(),
                            concurrency=CONCURRENCY, expected=data.matching(), limit=5)

    def e(self, row: Row) -> Row:
        data = Dataset.distinct(self.n)
        server = self.new_server("e")
        row.setup_s = load(server, data, self.args.timeout)
        cheap: Callable[[tuple[int, float, str]], bool] = lambda r: r[1] < 10  # noqa: E731
        sql = f"SELECT id FROM items WHERE price < 10 AND d MEANS '{CRITERION}'"
        return self.measure(row, server, sql, data=data, distinct=data.distinct_values(cheap), concurrency=CONCURRENCY,
                            expected=data.matching(cheap))

    def f(self, row: Row) -> Row:
        data = Dataset.distinct(self.n)

        def operators(workdir: Path) -> list[str]:
            ops = workdir / "operators"
            ops.mkdir()
            yaml_text = (ROOT / "semantic_ops" / "operators" / "semantic_matches.yaml").read_text()
            patched, count = re.subn(r"(?m)^(  - name: evaluate\n)", r"\1    batch_size: 20\n", yaml_text)
            if count != 1:
                raise RuntimeError("could not find the evaluate cell in semantic_matches.yaml")
            (ops / "semantic_matches.yaml").write_text(patched)
            return ["--operators-dir", str(ops)]

        server = self.new_server("f", operators)
        row.setup_s = load(server, data, self.args.timeout)
        return self.measure(row, server, QUERY, data=data, distinct=data.distinct_values(), concurrency=CONCURRENCY,
                            expected=data.matching())

    def g(self, row: Row) -> Row:
        data = Dataset.distinct(self.n)
        server = self.new_server("g")
        row.setup_s = load(server, data, self.args.timeout)
        return self.measure(row, server, QUERY, data=data, distinct=data.distinct_values(), concurrency=CONCURRENCY,
                            expected=data.matching(), behaviour={"fail_rate": 0.3, "fail_status": 500})

    def h(self, row: Row) -> Row:
        data = Dataset.distinct(self.n)
        server = self.new_server("h")
        row.setup_s = load(server, data, self.args.timeout)
        return self.measure(row, server, QUERY, data=data, distinct=data.distinct_values(), concurrency=LIMITED_INFLIGHT,
                            expected=data.matching(), behaviour={"max_inflight": LIMITED_INFLIGHT, "retry_after": 1})

    def judge(self, row: Row) -> None:
        """Set row.goal (what was wanted) and row.goal_met."""
        s, n = row.scenario, self.n
        ok_run = row.error is None and row.check_ok
        calls, wall, cpu = row.calls, row.wall_s, row.cpu_ms_per_call
        if s == "a":
            row.goal = f"calls = {n}, wall <= 1.25 x floor, CPU <= 2 ms/call"
            met = calls == n and wall is not None and row.floor_s is not None and wall <= 1.25 * row.floor_s \
                and cpu is not None and cpu <= 2.0
        elif s == "b":
            want = min(50, n)
            row.goal = f"calls = {want}, wall <= 1.5 s"
            met = calls == want and wall is not None and wall <= 1.5
        elif s == "c":
            row.goal = "calls = 0, wall < 0.5 s"
            met = calls == 0 and wall is not None and wall < 0.5
        elif s == "d":
            row.goal = f"calls <= {2 * CONCURRENCY} (2 waves)"
            met = calls is not None and calls <= 2 * CONCURRENCY
            if calls is not None:
                row.note = (row.note + "; " if row.note else "") + f"waves = {math.ceil(calls / CONCURRENCY)}"
        elif s == "e":
            row.goal = f"calls = {row.distinct} (distinct values with price < 10)"
            met = calls == row.distinct
        elif s == "f":
            want = math.ceil(n / 20)
            row.goal = f"calls = {want}, wall <= 2 s"
            met = calls == want and wall is not None and wall <= 2.0
        elif s == "g":
            a = self.rows.get("a")
            ref = a.calls if a is not None and a.calls and a.error is None else n
            row.goal = f"no error, calls <= 1.5 x {ref} ({'calls of a' if a is not None and a.calls else 'distinct'})"
            met = calls is not None and calls <= 1.5 * ref
        elif s == "h":
            limit = 1.5 * math.ceil(n / LIMITED_INFLIGHT) * DELAY
            row.goal = f"no error, wall <= {limit:.1f} s"
            met = wall is not None and wall <= limit
        else:
            met = False
        row.goal_met = bool(met and ok_run)

    def run(self, name: str) -> Row:
        row = Row(scenario=name)
        try:
            getattr(self, name)(row)
        except StartupFailed as exc:
            row.error = f"server start-up failed: {exc}"
            row.note = row.error
        except Exception as exc:  # a broken scenario is a row, not a crash
            row.error = f"bench error: {type(exc).__name__}: {exc}"
            row.note = row.error
        self.judge(row)
        self.rows[name] = row
        return row

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except Exception:
                server.kill()


# -- output --------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: list[Row], note_width: int = 110) -> str:
    head = ["scenario", "calls", "distinct", "wall s", "floor s", "wall/floor", "CPU ms/call", "max inflight",
            "result", "goal met", "note"]
    body = []
    for r in rows:
        cpu = _fmt(r.cpu_ms_per_call) if r.cpu_ms_per_call is not None else (
            f"({_fmt(r.cpu_ms_total, 0)} total)" if r.cpu_ms_total is not None else "-")
        note = r.note if len(r.note) <= note_width else r.note[:note_width - 3] + "..."
        body.append([r.scenario, _fmt(r.calls), _fmt(r.distinct), _fmt(r.wall_s), _fmt(r.floor_s), _fmt(r.ratio),
                     cpu, _fmt(r.max_inflight), r.check, "yes" if r.goal_met else "no", note])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    right = {1, 2, 3, 4, 5, 6, 7}

    def line(cells: list[str]) -> str:
        return " | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. a,b,c (default: all)")
    parser.add_argument("--rows", type=int, default=1000, help="distinct rows of the 1,000-row scenarios (default 1000)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a query may take before it is given up (180)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories (databases, server logs)")
    args = parser.parse_args(argv)
    only = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown or args.rows < 1:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}" if unknown else "--rows must be at least 1")
    order = [s for s in SCENARIOS if s in only]
    to_run = sorted(set(order) | ({"b"} if "c" in order else set()))  # (c) is (b) again on (b)'s server

    started = time.perf_counter()
    load_at_start = load_average()
    workroot = Path(tempfile.mkdtemp(prefix="meansql-bench-"))
    provider = Provider(workroot)
    bench: Bench | None = None
    self_check: dict[str, Any] = {}
    try:
        provider.start()
        self_check = provider_self_check(provider)
        print(f"stand-in provider self-check: {self_check['requests']} requests, {self_check['concurrency']} at a time, "
              f"{DELAY} s each: {self_check['wall_s']:.2f} s (ideal {self_check['ideal_s']:.2f} s, x{self_check['ratio']:.2f}), "
              f"provider CPU {self_check['provider_cpu_ms_per_request']:.2f} ms/request", flush=True)
        bench = Bench(args, provider, workroot)
        for name in to_run:
            t0 = time.perf_counter()
            row = bench.run(name)
            print(f"  ran ({name}) in {time.perf_counter() - t0:.1f} s: calls={_fmt(row.calls)} wall={_fmt(row.wall_s)} s"
                  + (f" error: {row.note[:160]}" if row.error else ""), flush=True)
            if name == "b" and "c" not in order or name == "c":
                if bench.kept is not None:
                    bench.kept.stop()
    finally:
        if bench is not None:
            bench.close()
        provider.stop()
    total = time.perf_counter() - started

    assert bench is not None
    shown = [bench.rows[s] for s in order if s in bench.rows]
    print()
    print(table(shown))
    print()
    print("goals (met also needs no error and the right rows):")
    for r in shown:
        print(f"  ({r.scenario}) {r.goal}")
    print("floor = ceil(distinct / concurrency) x 0.3 s; concurrency 64, 8 for (h). CPU = server utime+stime during "
          "the query and 0.5 s after it, all threads.")
    print("provider CPU ms during each query: " + ", ".join(f"{r.scenario}={_fmt(r.provider_cpu_ms, 0)}" for r in shown))
    if "c" in order and "b" not in order:
        print("(b) ran first to prepare (c) and is not shown")
    print(f"machine: {os.cpu_count()} CPUs, load average (1 min) {_fmt(load_at_start)} at start, {_fmt(load_average())} at end; "
          "other work on the machine inflates wall times")
    print(f"total bench wall time: {total:.1f} s")
    command = shlex.join(sys.orig_argv)
    print(f"command: {command}")

    if args.json:
        args.json.write_text(json.dumps({
            "command": command, "total_wall_s": round(total, 3), "rows_option": args.rows, "delay_s": DELAY,
            "concurrency": CONCURRENCY, "cpus": os.cpu_count(), "load_avg_1m_at_start": load_at_start,
            "provider_self_check": self_check,
            "scenarios": [asdict(bench.rows[s]) for s in to_run if s in bench.rows],
        }, indent=2))
        print(f"figures written to {args.json}")
    if args.keep:
        print(f"scratch kept in {workroot}")
    else:
        shutil.rmtree(workroot, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
