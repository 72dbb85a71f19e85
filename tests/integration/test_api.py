"""The appointments API through the real app: keys, JSON and CSV imports, the timeline, cancel,
FHIR with OperationOutcome errors, and size limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reminder_service.bootstrap import Service
from reminder_service.services.api_keys import ApiKeys

FHIR = Path(__file__).parents[1] / "conformance" / "fhir"
ONE = {
    "appointment_id": "API1", "patient_id": "AP1", "first_name": "Test", "last_name": "Patient",
    "mobile": "07700 900123", "email": "api.patient@example.org", "procedure": "BMBX",
    "start": "2026-12-10T09:30", "duration_minutes": 60, "location": "Day Unit",
    "sedation": "yes", "anticoagulant": "no",
}  # fmt: skip


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("test")
    yield TestClient(service.http_app()), {"Authorization": f"Bearer {key}"}


def test_every_data_endpoint_needs_a_key_but_health_does_not(service, api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    for method, path in [("post", "/appointments"), ("get", "/appointments/X"),
                         ("post", "/appointments/X/cancel"), ("post", "/imports/csv"),
                         ("post", "/fhir"), ("post", "/fhir/Appointment")]:  # fmt: skip
        assert getattr(client, method)(path).status_code == 401, path
        wrong = getattr(client, method)(path, headers={"X-API-Key": "rs_not-a-key"})
        assert wrong.status_code == 401, path
    assert client.get("/healthz").status_code == 200
    ApiKeys(service.engine, service.clock).revoke("test")
    assert client.get("/appointments/X", headers=auth).status_code == 401  # revoked at once


def test_json_appointments_import_like_csv_rows_and_show_their_timeline(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    bad = {**ONE, "appointment_id": "API2", "mobile": "12345"}
    answer = client.post("/appointments", json=[ONE, bad], headers=auth)
    assert answer.status_code == 200
    body = answer.json()
    assert body["summary"]["imported"] == 1
    assert body["errors"] == [
        {"index": 1, "field": "mobile", "reason": body["errors"][0]["reason"]}
    ]
    assert "12345" not in body["errors"][0]["reason"]  # no patient data echoed
    timeline = client.get("/appointments/API1", headers=auth).json()
    assert timeline["status"] == "booked" and timeline["start"] == "2026-12-10T09:30:00+00:00"
    steps = {(line["step"], line["channel"]) for line in timeline["timeline"]}
    assert ("day_before", "sms") in steps
    assert client.post("/appointments", json=bad, headers=auth).status_code == 422
    again = client.post("/appointments", json=ONE, headers=auth).json()
    assert again["summary"]["unchanged"] == 1  # idempotent


def test_cancel_stops_the_pending_reminders(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    client.post("/appointments", json=ONE, headers=auth)
    answer = client.post("/appointments/API1/cancel", headers=auth)
    assert answer.status_code == 200 and answer.json()["summary"]["cancelled"] == 1
    timeline = client.get("/appointments/API1", headers=auth).json()
    assert timeline["status"] == "cancelled"
    assert not [line for line in timeline["timeline"] if line["status"] == "pending"]
    assert client.post("/appointments/NOPE/cancel", headers=auth).status_code == 404


def test_a_csv_upload_answers_with_the_summary_and_row_errors(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    header = "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,"
    header += "procedure,start,duration_minutes,location,sedation,anticoagulant,status\n"
    good = "C1,P1,Test,Patient,,c1@example.org,,,BMBX,2026-12-10 09:30,60,,yes,no,booked\n"
    bad = "C2,P2,Test,Patient,,not-an-email,,,BMBX,2026-12-10 09:30,60,,yes,no,booked\n"
    answer = client.post(
        "/imports/csv", content=header + good + bad, headers={**auth, "Content-Type": "text/csv"}
    )
    body = answer.json()
    assert answer.status_code == 200 and body["summary"]["imported"] == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(3, "email")]
    rejected = client.post("/imports/csv", content=b"\xff\xfe\x00garbage", headers=auth)
    assert rejected.status_code == 422


def test_fhir_examples_post_as_they_are(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    patient = json.loads((FHIR / "r4-patient-example.json").read_text())
    appointment = json.loads((FHIR / "r4-appointment-example.json").read_text())
    appointment["start"], appointment["end"] = "2026-12-10T09:00:00Z", "2026-12-10T10:00:00Z"
    appointment["serviceType"][0]["coding"][0]["code"] = "BMBX"
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "http://example.org/fhir/Patient/example", "resource": patient,
         "request": {"method": "PUT", "url": "Patient/example"}},
        {"resource": appointment, "request": {"method": "PUT", "url": "Appointment/example"}},
    ]}  # fmt: skip
    answer = client.post("/fhir", json=bundle, headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert json.loads(answer.headers["X-Import-Summary"])["imported"] == 1
    assert client.get("/appointments/example", headers=auth).json()["procedure"] == "BMBX"
    # Alone, the Appointment names Patient/example, sent before in the bundle: found by that id.
    appointment["end"] = "2026-12-10T10:30:00Z"
    alone = client.post("/fhir/Appointment", json=appointment, headers=auth)
    assert alone.status_code == 200, alone.text
    assert json.loads(alone.headers["X-Import-Summary"])["updated"] == 1
    # A reference to a patient nobody sent: refused, naming the element.
    appointment["participant"][0]["actor"]["reference"] = "Patient/nobody"
    unknown = client.post("/fhir/Appointment", json=appointment, headers=auth)
    assert unknown.status_code == 422
    [issue] = unknown.json()["issue"]
    assert issue["code"] == "not-found" and issue["expression"] == ["Appointment.participant.actor"]


def test_the_official_examples_post_as_they_are_patient_first(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    patient = (FHIR / "r4-patient-example.json").read_bytes()
    assert client.post("/fhir", content=patient, headers=auth).status_code == 200
    appointment = client.post(
        "/fhir/Appointment",
        content=(FHIR / "r4-appointment-example.json").read_bytes(),
        headers=auth,
    )
    assert appointment.status_code == 200, appointment.text
    summary = json.loads(appointment.headers["X-Import-Summary"])
    assert summary["not_served"] == 1  # its service (General Discussion) has no protocol here
    for name in ("r4-appointment-example2doctors.json", "msfc-siu-s15-01-bundle.json"):
        posted = client.post("/fhir", content=(FHIR / name).read_bytes(), headers=auth)
        assert posted.status_code in (200, 422), (name, posted.text)
        assert posted.json()["resourceType"] == "OperationOutcome"


def test_fhir_errors_are_an_operation_outcome_naming_the_element(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    actor = {"actor": {"reference": "Patient/x"}, "status": "accepted"}
    broken: dict[str, Any] = {
        "resourceType": "Appointment", "status": "booked", "start": "soon", "participant": [actor],
    }  # fmt: skip
    answer = client.post("/fhir/Appointment", json=broken, headers=auth)
    assert answer.status_code == 422
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any("Appointment.start" in "".join(i.get("expression", [])) for i in outcome["issue"])
    assert client.post("/fhir", content=b"{not json", headers=auth).status_code == 400


def test_oversized_bodies_get_413(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    big = b"[" + b" " * (1024 * 1024 + 1) + b"]"
    assert client.post("/appointments", content=big, headers=auth).status_code == 413
    assert client.post("/fhir", content=big, headers=auth).status_code == 413
    many = [{**ONE, "appointment_id": f"M{i}"} for i in range(1001)]
    assert client.post("/appointments", json=many, headers=auth).status_code == 413


def test_an_older_fhir_update_arriving_later_changes_nothing(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    patient = json.loads((FHIR / "r4-patient-example.json").read_text())
    client.post("/fhir", json=patient, headers=auth)
    appointment = json.loads((FHIR / "r4-appointment-example.json").read_text())
    appointment.update(start="2026-12-10T09:00:00Z", end="2026-12-10T10:00:00Z")
    appointment["meta"] = {"lastUpdated": "2026-11-20T10:00:00Z"}
    cancelled = {
        **appointment,
        "status": "cancelled",
        "meta": {"lastUpdated": "2026-11-21T10:00:00Z"},
    }
    for body in (appointment, cancelled, appointment):  # the first update replayed last
        assert client.post("/fhir/Appointment", json=body, headers=auth).status_code == 200
    assert client.get("/appointments/example", headers=auth).json()["status"] == "cancelled"
