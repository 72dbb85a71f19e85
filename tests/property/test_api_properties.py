"""Property: whatever the body of POST /appointments (hostile items, any JSON, deep nesting,
bytes that are not JSON), the answer is 200, 400, 413 or 422 with a reason, never a 500; a
request refused whole writes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import given

from reminder_service.bootstrap import Service
from reminder_service.services.api_keys import ApiKeys
from tests.property.hostile import api_body, check_api_answer, counts

pytestmark = pytest.mark.property


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("property")
    with TestClient(service.http_app()) as client:
        yield client, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@given(body=api_body())
def test_any_body_is_answered_and_a_refusal_writes_nothing(
    service: Service, api: tuple[TestClient, dict[str, str]], body: bytes
) -> None:
    client, headers = api
    before = counts(service.engine)
    answer = client.post("/appointments", content=body, headers=headers)
    check_api_answer(answer.status_code, answer.json(), before, counts(service.engine))
    if answer.status_code == 200:
        assert set(answer.json()) == {"summary", "errors", "warnings"}
