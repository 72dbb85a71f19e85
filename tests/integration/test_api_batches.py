"""The import endpoints on real-world input: batches where one item is bad, the clinic a request
is for, CSV uploads with their mapping, and FHIR statuses that are not bookings yet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reminder_service.bootstrap import Service
from reminder_service.services.api_keys import ApiKeys
from reminder_service.store.tables import patients

ONE = {
    "appointment_id": "B1", "patient_id": "BP1", "first_name": "Test", "last_name": "Patient",
    "mobile": "07700 900123", "procedure": "BMBX", "start": "2026-12-10T09:30",
    "sedation": "yes", "anticoagulant": "no",
}  # fmt: skip


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("test")
    yield TestClient(service.http_app()), {"Authorization": f"Bearer {key}"}


def _mobile(service: Service, patient_id: str) -> str | None:
    with service.engine.connect() as conn:
        query = select(patients.c.mobile).where(patients.c.external_id == patient_id)
        return conn.execute(query).scalar_one_or_none()


def test_one_bad_item_never_fails_the_batch(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    items = [
        ONE,
        {**ONE, "appointment_id": "B2", "sedation": "perhaps"},  # refused by the schema
        "not an object",
        {**ONE, "appointment_id": "B4", "start": ""},  # a booking needs its start
        {**ONE, "appointment_id": "B5", "patient_id": "BP5"},
        {"appointment_id": "B1", "status": "cancelled"},  # a cancellation needs only its id
        {"appointment_id": "NEVER-SEEN", "status": "cancelled"},
    ]
    answer = client.post("/appointments", json=items, headers=auth)
    assert answer.status_code == 200
    body = answer.json()
    assert sorted({(e["index"], e["field"]) for e in body["errors"]}) == [
        (1, "sedation"),
        (2, ""),
        (3, "start"),
    ]
    summary = body["summary"]
    assert summary["imported"] == 2  # B1 then B5
    assert summary["cancelled"] == 1 and summary["cancel_not_found"] == 1
    assert summary["rejected"] == 3
    # Every item is counted exactly once.
    outcomes = ("imported", "rescheduled", "updated", "cancelled", "cancel_not_found",
                "unchanged", "out_of_order", "not_served", "rejected")  # fmt: skip
    assert sum(summary[k] for k in outcomes) == len(items)


def test_a_batch_of_only_bad_items_is_a_422_with_every_index(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = client.post("/appointments", json=[{"x": 1}, 7], headers=auth)
    assert answer.status_code == 422
    assert {e["index"] for e in answer.json()["errors"]} == {0, 1}
    assert answer.json()["summary"]["rejected"] == 2


def test_the_clinic_of_a_request_decides_the_country_of_its_numbers(  # type: ignore[no-untyped-def]
    service, api
) -> None:
    client, auth = api
    us = {**ONE, "appointment_id": "US1", "patient_id": "USP1", "mobile": "(734) 555-0123",
          "timezone": "America/Chicago"}  # fmt: skip
    answer = client.post("/appointments?clinic=lakeside", json=us, headers=auth)
    assert answer.status_code == 200, answer.json()
    assert _mobile(service, "USP1") == "+17345550123"
    # The same item for the British clinic: two countries read it differently, so it is refused.
    other = {**us, "appointment_id": "US2", "patient_id": "USP2"}
    refused = client.post("/appointments?clinic=riverside", json=other, headers=auth).json()
    assert refused["errors"][0]["field"] == "mobile"
    assert "reads as a different number in US and GB" in refused["errors"][0]["reason"]


def test_an_unknown_clinic_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    assert client.post("/appointments?clinic=nowhere", json=ONE, headers=auth).status_code == 422
    fhir = client.post("/fhir?clinic=nowhere", json={"resourceType": "Appointment"}, headers=auth)
    assert fhir.status_code == 422
    assert fhir.json()["resourceType"] == "OperationOutcome"


OPENEMR_STYLE = (
    "Appt ID,MRN,First,Last,Cell Phone,Email,Apt Type,Date,Time,Length,Room,Sedation,"
    "Blood Thinner,Status\n"
    "E1,EP1,Test,Patient,(212) 555-0199,,Bone Marrow Biopsy,12/10/2026,9:30 AM,3600,2,Y,N,"
    "- None\n"
)


def test_a_csv_upload_with_a_named_mapping(service, api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = client.post(
        "/imports/csv?mapping=openemr-style.example&clinic=lakeside",
        content=OPENEMR_STYLE.encode(),
        headers={**auth, "Content-Type": "text/csv"},
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["summary"]["imported"] == 1
    assert _mobile(service, "EP1") == "+12125550199"


def test_a_csv_upload_with_its_mapping_sent_along(service, api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    mapping = (service.settings.config_dir / "mappings" / "openemr-style.example.yaml").read_bytes()
    answer = client.post(
        "/imports/csv?clinic=lakeside",
        files={
            "file": ("export.csv", OPENEMR_STYLE.encode(), "text/csv"),
            "mapping": ("mapping.yaml", mapping, "application/yaml"),
        },
        headers=auth,
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["summary"]["imported"] == 1


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("mapping=../clinics", "no path"),
        ("mapping=missing", "no mapping named 'missing'"),
    ],
)
def test_a_bad_mapping_name_is_a_clear_422(api, query: str, said: str) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = client.post(f"/imports/csv?{query}", content=b"x\n", headers=auth)
    assert answer.status_code == 422 and said in answer.json()["detail"]


def test_a_bad_mapping_sent_along_names_what_is_wrong(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = client.post(
        "/imports/csv",
        files={"file": ("x.csv", b"a\n", "text/csv"), "mapping": ("m.yaml", b"colums: {}\n")},
        headers=auth,
    )
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("mapping:")
    assert "colums" in answer.json()["detail"]


def test_fhir_statuses_not_booked_yet_get_a_200_informational_outcome(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    for status in ("proposed", "pending", "waitlist"):
        document = {
            "resourceType": "Appointment",
            "id": f"F-{status}",
            "status": status,
            "participant": [{"actor": {"reference": "Patient/nobody"}, "status": "needs-action"}],
        }
        answer = client.post("/fhir", json=document, headers=auth)
        assert answer.status_code == 200, answer.json()
        [issue] = answer.json()["issue"]
        assert issue["severity"] == "information"
        assert issue["expression"] == ["Appointment.status"]
        assert "not booked yet" in issue["diagnostics"]
