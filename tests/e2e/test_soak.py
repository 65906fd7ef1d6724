"""A short soak: clients on a mixed workload with fuzz traffic; bench/soak.py runs the 10-minute version."""

from __future__ import annotations

from bench.soak import soak


def test_short_soak_leaves_no_errors_and_no_threads_behind() -> None:
    f = soak(minutes=0.5, clients=12, fuzz=0.02, warmup=0.2, report=lambda line: None)
    assert not f["crashed"]
    assert f["tracebacks"] == 0
    assert f["unexpected"] == []
    assert f["fuzz_bad"] == []
    assert f["ops"] > 100 and f["model_calls"] > 0
    assert f["threads_peak"] > f["threads_idle"]  # the clients had sessions of their own
    assert abs(f["threads_after"] - f["threads_idle"]) <= 2
