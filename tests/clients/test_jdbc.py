"""pgjdbc's DatabaseMetaData and PreparedStatement, against meansql and PostgreSQL alike.

tests/clients/java/MetadataCheck.java is compiled once per session and run
with pgjdbc (Debian's libpostgresql-jdbc-java) on the class path; it prints
one tab-separated fact a line, which the checks below read.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import Target

JAR = "/usr/share/java/postgresql.jar"
SOURCE = Path(__file__).parent / "java" / "MetadataCheck.java"

# java.sql.Types
INTEGER, VARCHAR, NUMERIC, TIMESTAMP, BIT = 4, 12, 2, 93, -7


@pytest.fixture(scope="session")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert Path(JAR).is_file() and shutil.which("javac"), "pgjdbc and Java 17: scripts/install.sh --clients"
    out = tmp_path_factory.mktemp("jdbc")
    subprocess.run(["javac", "-d", str(out), "-cp", JAR, str(SOURCE)], check=True, capture_output=True,
                   text=True, timeout=120)
    return out


Facts = dict[str, list[list[str]]]


@pytest.fixture()
def facts(target: Target, table_name: str, classes: Path) -> Facts:
    url = f"jdbc:postgresql://{target.host}:{target.port}/{target.dbname}"
    out = subprocess.run(["java", "-cp", f"{classes}:{JAR}", "MetadataCheck", url, target.user, table_name],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got: Facts = {}
    for line in out.stdout.splitlines():
        kind, *cells = line.split("\t")
        got.setdefault(kind, []).append(cells)
    return got


def section(facts: Facts, kind: str) -> list[list[str]]:
    """The lines of one section; a section that failed in Java fails here with the server's error."""
    errors = [cells for cells in facts.get("error", []) if cells[0] == kind]
    assert not errors, errors
    return facts.get(kind, [])


def test_get_tables(facts: Facts, table_name: str) -> None:
    assert section(facts, "table") == [["public", table_name, "TABLE"]]


def test_get_columns(facts: Facts) -> None:
    assert section(facts, "column") == [
        ["id", "int4", str(INTEGER)],
        ["label", "text", str(VARCHAR)],
        ["price", "numeric", str(NUMERIC)],
        ["seen", "timestamp", str(TIMESTAMP)],
        ["ok", "bool", str(BIT)],
    ]


def test_get_schemas(facts: Facts) -> None:
    # pgjdbc leaves out pg_toast and the temporary schemas.
    assert [cells[0] for cells in section(facts, "schema")] == ["information_schema", "pg_catalog", "public"]


def test_get_primary_keys(facts: Facts, table_name: str) -> None:
    # KEY_SEQ is the position in the key, not in the table (pgjdbc orders by it).
    assert section(facts, "pk") == [["label", "1", f"{table_name}_pkey"], ["id", "2", f"{table_name}_pkey"]]


def test_prepared_statement_with_int_and_text_parameters(facts: Facts) -> None:
    # Runs 5 and 6 go through a named server-side statement with binary results.
    assert section(facts, "param") == [[str(run), "7", "seven"] for run in range(1, 7)]
