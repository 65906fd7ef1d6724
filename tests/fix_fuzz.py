"""Generated malformed pg-wire traffic and a runner that checks how a server takes it.

A case is the bytes one connection sends, either right after connecting (the
startup phase) or after a good login. The runner half-closes the socket after
sending, so a server waiting for the rest of a truncated message sees EOF; the
server must then answer with FATAL 08P01 (or ordinary errors and
ReadyForQuery for input that happens to be valid) and close, within a deadline.
Used by tests/server/test_protocol_fuzz.py and bench/fuzz_wire.py.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests import fix_wire as w

# Every crash input ever found stays here as a seed: (phase, bytes).
SEEDS: list[tuple[str, bytes]] = [
    ("ready", w.parse("SELECT $1", "s", [23] * 65_535)),  # unsigned count; was FATAL on a negative int16
    ("ready", w.parse("SELECT $1::int + $65535::int", "big", [23] * 65_535)
     + w.bind("", "big", [b"1"] * 65_535) + w.execute() + w.sync()),  # 400 kB error text hung the logger
    ("ready", w.query("COPY (SELECT 1) TO STDOUT") + w.copy_data(b"x")),
    ("ready", w.query("COPY fuzz_t TO STDOUT (FORMAT csv)") + w.sync()),
    ("ready", w.query("COPY fuzz_t FROM STDIN") + w.query("SELECT 1")),
    ("ready", w.query("COPY fuzz_t FROM STDIN") + w.copy_data(b"\xff\xfe\t\\") + w.copy_done()),
    ("startup", struct.pack("!ii", 8, 80877103) + b"Q\x00\x00\x00\x05\x00"),
]

LENGTHS = [0, 1, 2, 3, 4, 5, 0x7FFFFFFF, -1, -4, -(2**31), 10_001, 10_004, 10_005, 1 << 30, (1 << 30) + 5]
ALL_TYPES = b"QPBDEHSCXpdcfFGYZ\x00\xff"
# No `COPY ... TO STDOUT` here: a flipped byte in STDOUT makes it DuckDB's COPY TO a file in the server's
# directory (COPY TO STDOUT is in the seeds, whose bytes are fixed).
VALID_SQL = ["SELECT 1", "SELECT $1", "BEGIN", "COMMIT", "ROLLBACK", "SELECT * FROM fuzz_t", "",
             "COPY fuzz_t FROM STDIN", "SELECT 'é'", "SET application_name = 'f'"]


def _good_message(rng: random.Random) -> bytes:
    sql = rng.choice(VALID_SQL)
    return rng.choice([
        lambda: w.query(sql), lambda: w.parse(sql, rng.choice(["", "s1"])), lambda: w.bind(),
        lambda: w.bind("p", "s1", [b"1"]), lambda: w.describe(b"S", "s1"), lambda: w.describe(b"P"),
        lambda: w.execute(), lambda: w.execute("p", 1), lambda: w.close(b"S", "s1"), lambda: w.sync(),
        lambda: w.flush(), lambda: w.copy_data(b"1\tx\n"), lambda: w.copy_done(), lambda: w.copy_fail("f"),
    ])()


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One damage of a message: truncation, a bad length word, flipped or removed bytes, bad UTF-8."""
    how = rng.randrange(9)
    if how == 0 and len(data) > 1:
        return data[:rng.randrange(1, len(data))]
    if how == 1:
        return data[:1] + struct.pack("!I", rng.choice(LENGTHS) & 0xFFFFFFFF) + data[5:]
    if how == 2:
        return bytes([rng.choice(ALL_TYPES)]) + data[1:]
    if how == 3 and len(data) > 5:
        body = bytearray(data[5:])
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        return data[:5] + bytes(body)
    if how == 4:
        body = data[5:].replace(b"\x00", b"", rng.randrange(1, 3))  # missing NULs, length left as it was
        return data[:1] + struct.pack("!i", len(body) + 4) + body
    if how == 5:
        body = data[5:] + b"\xff\xfe\xc3(" + bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
        return data[:1] + struct.pack("!i", len(body) + 4) + body
    if how == 6:  # counts set to 0xFFFF where Parse/Bind keep them
        body = bytearray(data[5:])
        if len(body) > 4:
            pos = rng.randrange(len(body) - 1)
            body[pos:pos + 2] = b"\xff\xff"
        return data[:5] + bytes(body)
    if how == 7:
        return data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    return bytes([rng.choice(ALL_TYPES)]) + struct.pack("!i", len(body) + 4) + body


def _startup_case(rng: random.Random) -> bytes:
    how = rng.randrange(8)
    good = w.startup(database="default")
    if how == 0:
        return struct.pack("!I", rng.choice(LENGTHS) & 0xFFFFFFFF) + good[4:]
    if how == 1:
        return good[:rng.randrange(1, len(good))]
    if how == 2:  # an unknown protocol version or request code
        return struct.pack("!ii", 8 + 4, rng.choice([0, 1 << 16, 2 << 16, 196609, 80877105, rng.getrandbits(31)])) \
            + b"\x00\x00\x00\x00"
    if how == 3:  # missing NULs, invalid UTF-8
        body = good[8:].replace(b"\x00", b"", rng.randrange(1, 4)) if rng.random() < 0.5 else \
            good[8:-1] + b"\xff\xfe\x00\x80\x00\x00"
        return struct.pack("!ii", len(body) + 8, w.PROTOCOL_3) + body
    if how == 4:  # a cancel request of any size
        body = struct.pack("!i", 80877102) + bytes(rng.randrange(256) for _ in range(rng.choice([0, 4, 8, 12])))
        return struct.pack("!i", len(body) + 4) + body
    if how == 5:  # SSLRequest and then anything
        return struct.pack("!ii", 8, 80877103) + _mutate(rng, _good_message(rng))
    if how == 6:  # a frontend message where the startup packet belongs
        return _good_message(rng)
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))


@dataclass
class Case:
    phase: str  # "startup": sent on connect; "ready": sent after a good login
    data: bytes
    messages: int


def cases(seed: int, n: int) -> Iterator[Case]:
    """The seeds, then n generated cases."""
    for phase, data in SEEDS:
        yield Case(phase, data, 1)
    rng = random.Random(seed)
    for _ in range(n):
        if rng.random() < 0.25:
            yield Case("startup", _startup_case(rng), 1)
            continue
        parts = [_good_message(rng) for _ in range(rng.randrange(0, 4))]
        bad = _mutate(rng, _good_message(rng))
        parts.insert(rng.randrange(len(parts) + 1), bad)
        if rng.random() < 0.3:
            parts.append(w.startup(database="default"))  # a startup packet in the wrong phase
        yield Case("ready", b"".join(parts), len(parts))


@dataclass
class Outcome:
    ok: bool
    hung: bool = False
    why: str = ""
    fatal_codes: list[str] = field(default_factory=list)


def run_case(host: str, port: int, case: Case, deadline: float = 5.0) -> Outcome:
    """Send one case; the server must close the connection (after a half-close) within the deadline."""
    sock = socket.create_connection((host, port), timeout=deadline)
    try:
        conn = w.RawConnection.__new__(w.RawConnection)
        conn.sock, conn._buf = sock, bytearray()
        if case.phase == "ready":
            try:
                login = conn.login(database="default")
            except OSError as exc:
                return Outcome(False, why=f"login failed: {exc}")
            if login[-1].kind != "Z":
                return Outcome(False, why=f"login failed: {w.summary(login)}")
        try:
            sock.sendall(case.data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed first: that is an allowed answer
        try:
            got = conn.until_closed(deadline)
        except TimeoutError:
            return Outcome(False, hung=True, why="connection still open after EOF")
        except OSError as exc:
            return Outcome(True, why=str(exc))
        fatals = [m.fields().get("C", "") for m in got if m.kind == "E" and m.fields().get("V") == "FATAL"]
        bad = [c for c in fatals if c not in ("08P01", "0A000")]
        return Outcome(not bad, why=f"FATAL {bad}" if bad else "", fatal_codes=fatals)
    finally:
        sock.close()


class Control:
    """A connection that answers SELECT 1 while the fuzzing runs; records latencies."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = w.RawConnection(host, port)
        self.conn.login(database="default")
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def ping(self) -> None:
        start = time.perf_counter()
        try:
            self.conn.send(w.query("SELECT 1"))
            got = w.summary(self.conn.until_ready())
        except OSError as exc:
            self.failures.append(str(exc))
            return
        self.latencies.append(time.perf_counter() - start)
        if got != [("T", "1"), ("D", "1"), ("C", "SELECT 1"), ("Z", "I")]:
            self.failures.append(str(got))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def run_many(host: str, port: int, all_cases: list[Case], workers: int,
             on_progress: Callable[[int], None] | None = None, rate: float = 0.0) -> list[tuple[Case, Outcome]]:
    """Run cases over `workers` concurrent connections; results in case order.

    rate: cases started per second at most (0: as fast as the workers go).
    """
    from concurrent.futures import ThreadPoolExecutor

    start = time.monotonic()

    def one(item: tuple[int, Case]) -> Outcome:
        if rate:
            time.sleep(max(0.0, start + item[0] / rate - time.monotonic()))
        return run_case(host, port, item[1])

    results: list[tuple[Case, Outcome]] = []
    with ThreadPoolExecutor(workers) as pool:
        for i, outcome in enumerate(pool.map(one, enumerate(all_cases))):
            results.append((all_cases[i], outcome))
            if on_progress is not None:
                on_progress(i + 1)
    return results
