"""Fixtures: the stand-in provider on loopback and real `meansql serve` processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fake_provider import FakeProvider

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until condition() is truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class ServerProcess:
    """A `meansql serve` child process on a free port."""

    def __init__(self, db: Path, env: dict[str, str], args: list[str]) -> None:
        self.db = db
        self.env = env
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.output: list[str] = []

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "server.cli", "serve", "--db", str(self.db), "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            m = re.search(r"listening on [\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            self.proc.kill()
            raise AssertionError("server did not start:\n" + "".join(self.output) + (self.proc.stdout.read() or ""))
        return self

    @property
    def url(self) -> str:
        return f"postgresql://localhost:{self.port}/default"

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop the process; returns what it printed."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rest, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        self.proc = None
        return "".join(self.output) + (rest or "")


def server_env(provider: FakeProvider | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEANSQL_")}
    env["PYTHONPATH"] = str(ROOT)
    env["HF_HUB_OFFLINE"] = "1"
    env["MEANSQL_HTTP_PORT"] = "0"  # servers run side by side; each HTTP API on a free port
    if provider is not None:
        env.update({"MEANSQL_MODEL": "openai/stand-in", "MEANSQL_API_BASE": provider.url,
                    "OPENAI_API_KEY": "sk-test", "MEANSQL_NUM_RETRIES": "2", "MEANSQL_REQUEST_TIMEOUT": "5"})
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def provider() -> Iterator[FakeProvider]:
    p = FakeProvider().start()
    yield p
    p.stop()


@pytest.fixture()
def fresh_provider(provider: FakeProvider) -> FakeProvider:
    provider.reset()
    return provider


@pytest.fixture()
def start_server(tmp_path: Path, fresh_provider: FakeProvider) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers for one test; each is stopped at the end."""
    started: list[ServerProcess] = []

    def start(*args: str, db: Path | None = None, provider: FakeProvider | None | bool = True,
              **env: str) -> ServerProcess:
        prov = fresh_provider if provider is True else (provider or None)
        server = ServerProcess(db or tmp_path / "meansql.duckdb", server_env(prov, **env), list(args)).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture()
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()


PRODUCTS = [
    (1, "Eco-friendly bamboo toothbrush"),
    (2, "Sustainable cotton t-shirt"),
    (3, "Plastic water bottle"),
    (4, "Reusable steel water bottle"),
    (5, "Disposable plastic fork"),
]


def create_products(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE products (id INT, description VARCHAR)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO products VALUES (%s, %s)", PRODUCTS)


def collect_notices(conn: psycopg.Connection[Any]) -> list[str]:
    """The primary message of every NOTICE/WARNING the connection receives from now on."""
    seen: list[str] = []
    conn.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
    return seen


def psql(url: str, *commands: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real psql client, one -c per command."""
    args = ["psql", "-X", "-v", "ON_ERROR_STOP=0", url]
    for c in commands:
        args += ["-c", c]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if check and result.returncode not in (0,):
        raise AssertionError(f"psql failed ({result.returncode}): {result.stderr}")
    return result
