"""Schemathesis against the served OpenAPI spec: no input makes the training store answer 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import ServerProcess, server_env
from tests.e2e.test_store_api import http_url


@pytest.fixture(scope="module")
def store_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    db = Path(tmp_path_factory.mktemp("schemathesis")) / "meansql.duckdb"
    server = ServerProcess(db, server_env(None), []).start()
    try:
        url = http_url(server)
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    finally:
        server.stop()


def test_no_server_errors(store_api: schemathesis.BaseSchema) -> None:
    # One server for every operation (schemathesis.pytest.from_fixture does not run on this pytest).
    operations = [result.ok() for result in store_api.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        check()
