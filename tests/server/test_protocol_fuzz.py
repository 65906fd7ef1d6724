"""Malformed, truncated, oversized and out-of-phase messages over many connections to a real server.

Each bad connection gets FATAL 08P01 (or ordinary answers to what happened to
be valid) and is closed; none hangs; the process never crashes or logs a
traceback; a control connection answers SELECT 1 throughout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tests.conftest import ServerProcess
from tests.fix_fuzz import Control, cases, run_many

CASES = 4_000
WORKERS = 16


def _drain(server: ServerProcess) -> threading.Thread:
    """Read the server's output as it comes, so a chatty log never blocks it on a full pipe."""
    assert server.proc is not None and server.proc.stdout is not None
    stdout = server.proc.stdout
    t = threading.Thread(target=lambda: server.output.extend(iter(stdout.readline, "")), daemon=True)
    t.start()
    return t


def test_fuzzed_traffic_never_hurts_the_server(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(provider=False)
    _drain(server)
    with server.connect() as conn:
        conn.execute("CREATE TABLE fuzz_t (a INT, b TEXT)")
    control = Control("127.0.0.1", server.port)
    all_cases = list(cases(seed=20261123, n=CASES))
    results = run_many("127.0.0.1", server.port, all_cases, WORKERS,
                       on_progress=lambda done: control.ping() if done % 100 == 0 else None)
    control.ping()
    assert server.proc is not None and server.proc.poll() is None, "server process died"
    hung = [c for c, o in results if o.hung]
    wrong = [(c.data[:80], o.why) for c, o in results if not o.ok and not o.hung]
    assert not hung, f"{len(hung)} connections hung, e.g. {hung[0].data[:80]!r}"
    assert not wrong, f"{len(wrong)} bad answers, e.g. {wrong[:3]}"
    assert any(o.fatal_codes for _, o in results)  # the cases did reach the checks
    assert control.failures == [] and len(control.latencies) >= CASES // 100
    with server.connect() as conn:
        assert conn.execute("SELECT count(*) FROM fuzz_t").fetchone() is not None
    output = server.stop()
    assert "Traceback" not in output and "connection failed" not in output and "internal error" not in output, \
        output[-4000:]
