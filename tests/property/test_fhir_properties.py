"""Property: any FHIR document (the conformance samples with elements replaced, removed or set
to edge values) gives changes whose issues name the element, never an escaped exception; over
the API it is answered 200, 400 or 422, and a refused document writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given

from reminder_service.bootstrap import Service
from reminder_service.services.api_keys import ApiKeys
from tests.property.hostile import check_api_answer, check_fhir, counts, fhir_document

pytestmark = pytest.mark.property


@given(fhir_document())
def test_any_document_maps_or_names_the_element(document: Any) -> None:
    check_fhir(document)


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("property")
    with TestClient(service.http_app()) as client:
        yield client, {"Authorization": f"Bearer {key}", "Content-Type": "application/fhir+json"}


@given(document=fhir_document())
def test_posting_any_document_answers_and_a_refusal_writes_nothing(
    service: Service, api: tuple[TestClient, dict[str, str]], document: Any
) -> None:
    client, headers = api
    before = counts(service.engine)
    answer = client.post("/fhir", content=json.dumps(document).encode(), headers=headers)
    check_api_answer(answer.status_code, answer.json(), before, counts(service.engine))
    assert answer.json()["resourceType"] == "OperationOutcome"
