#!/usr/bin/env bash
# Install meansql and what it needs on a fresh Debian machine: the psql client,
# a virtualenv in .venv with the hash-locked dependencies, and meansql itself.
# With --tests it also installs what the tests drive: a PostgreSQL server,
# redis-server, pgjdbc for Java 17 and node-postgres (locked in
# tests/clients/node/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
[ "${1:-}" = "--tests" ] && tests=1

need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
if [ $tests = 1 ]; then
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
  ls /usr/share/java/postgresql.jar >/dev/null 2>&1 || need_apt+=(libpostgresql-jdbc-java)
  command -v javac >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
  command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
"$PY" scripts/check_lock.py
quiet_pip() {  # pip's notes about absent local mirrors are noise here
  .venv/bin/pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
quiet_pip --require-hashes -r requirements.lock
quiet_pip --no-deps --no-build-isolation -e .
if [ $tests = 1 ]; then
  (cd tests/clients/node && npm ci --no-audit --no-fund --silent)
fi
echo "meansql installed in .venv ($(.venv/bin/meansql --help >/dev/null && echo ok))"
