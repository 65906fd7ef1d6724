#!/usr/bin/env bash
# Install, then run every check CI runs: lint, layers, types, the lock, and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --tests
.venv/bin/ruff check .
.venv/bin/lint-imports
.venv/bin/mypy semantic_ops training
.venv/bin/python -m pytest -q "$@"
