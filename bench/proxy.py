"""Proxy mode throughput: the same PostgreSQL, through `meansql serve --upstream` and directly, in one run.

Part (a) of the proxy bench: streaming of `--rows` rows and simple-query `SELECT 1` round trips, with 1 and 16
client threads, as bench/wire.py measures them. Goals: round trips >= 60% of direct, streaming >= 80%.

    .venv/bin/python -m bench.proxy [--rows 1000000] [--seconds 3]

The client runs in this process, so on a small machine its own CPU is part of both figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/proxy.py`
    sys.path.insert(0, str(ROOT))

from bench.wire import MeansqlProcess, measure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)

    from tests.clients.conftest import PostgresServer

    pg = PostgresServer().start()
    direct = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    try:
        proxy = MeansqlProcess(["--log-level", "WARNING", "--no-http", "--upstream", direct]).start()
        try:
            through = measure(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres", args.rows, args.seconds)
        finally:
            proxy.stop()
        plain = measure(direct, args.rows, args.seconds)
    finally:
        pg.stop()

    goals = {"stream": 0.8, "SELECT": 0.6}
    print(f"{'figure':<28}{'proxy':>12}{'direct':>12}{'ratio':>8}{'goal':>7}")
    for name, value in through.items():
        base = plain[name]
        print(f"{name:<28}{value:>12,.0f}{base:>12,.0f}{value / base:>8.0%}{'>=' + format(goals[name.split()[0]], '.0%'):>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
