"""Schemathesis against the API's own OpenAPI spec: whatever it sends, no server error (5xx),
with a valid key and without one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from reminder_service import bootstrap
from reminder_service.services.api_keys import ApiKeys
from reminder_service.settings import Settings
from tests.factories import CONFIG_DIR, TEMPLATES_DIR


def _app(tmp: Path):  # type: ignore[no-untyped-def]
    service = bootstrap.build(
        Settings(f"sqlite:///{tmp / 'fuzz.db'}", tmp / "outbox", CONFIG_DIR, TEMPLATES_DIR)
    )
    key = ApiKeys(service.engine, service.clock).create("fuzz")
    return service, service.http_app(), key


_TMP = Path(__import__("tempfile").mkdtemp(prefix="reminder-fuzz-"))
SERVICE, APP, KEY = _app(_TMP)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _close() -> Iterator[None]:
    yield
    SERVICE.close()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_with_a_key(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call(headers={"Authorization": f"Bearer {KEY}"})
    case.validate_response(response, checks=[not_a_server_error])


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_without_a_key(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    if case.path not in ("/healthz",):
        assert response.status_code in (401, 404, 405, 422)
