"""Fail when requirements.lock drifts from pyproject/requirements.in or allows a banned release.

Every direct dependency must be pinned exactly, with hashes; litellm releases
with malicious uploads (1.82.7, 1.82.8, every 1.107.x) are refused.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANNED = {"litellm": re.compile(r"^(1\.82\.7|1\.82\.8|1\.107\..*)$")}
MUST_PIN = {"litellm": "1.106.0", "duckdb": "1.5.5", "buenavista": "0.5.0", "sqlglot": "30.30.0"}


def _name(req: str) -> str:
    return re.split(r"[\[=<>~! ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def main() -> int:
    lock_text = (ROOT / "requirements.lock").read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[a-z0-9])", lock_text):
        m = re.match(r"^([a-z0-9][a-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\]+)", block, re.I)
        if not m:
            continue
        if "--hash=sha256:" not in block:
            print(f"requirements.lock: {m.group(1)} has no hash", file=sys.stderr)
            return 1
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    problems = []
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
        print(f"lock check: {len(pins)} pinned packages with hashes, no banned release")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
