"""A booking whose start is already past when it is imported: stored (history; a later
cancellation still finds it), and reported as a warning naming its place in each source: the CSV
line, the HL7 message, the FHIR resource, the JSON item. Cancellations of past appointments are
no news and get no warning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import AppointmentStatus
from reminder_service.services.api_keys import ApiKeys
from reminder_service.services.auditing import audit_trail
from reminder_service.services.csv_import import import_csv_file
from reminder_service.services.hl7_import import apply_siu
from tests.factories import ROOT, appointment, local

# The clock fixture says Thursday 19 November 2026, 11:00 in London.
YESTERDAY = local("Europe/London", 2026, 11, 18, 9, 30)
PAST = "appointment {} is in the past (started 2026-11-18 09:30 Europe/London)"


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("test")
    yield TestClient(service.http_app()), {"Authorization": f"Bearer {key}"}


def test_a_past_booking_is_imported_with_a_warning_and_audited(service: Service) -> None:
    summary = service.importer.apply(
        [(2, appointment()), (3, appointment(external_id="OLD", start=YESTERDAY))],
        source="t",
        label="t",
    )
    assert (summary.imported, summary.in_the_past) == (2, 1)
    [warning] = summary.warnings
    assert (warning.line, warning.column) == (3, "start")
    assert warning.reason.startswith(PAST.format("OLD"))
    assert [e.event for e in audit_trail(service.engine, "OLD")] == ["imported", "in_the_past"]
    # The same file again changes nothing, and says nothing new.
    again = service.importer.apply(
        [(3, appointment(external_id="OLD", start=YESTERDAY))], source="t", label="t"
    )
    assert (again.unchanged, again.in_the_past, again.warnings) == (1, 0, [])
    # Its cancellation still applies, with no warning.
    cancelled = appointment(external_id="OLD", start=YESTERDAY, status=AppointmentStatus.CANCELLED)
    gone = service.importer.apply([(4, cancelled)], source="t", label="t")
    assert (gone.cancelled, gone.warnings) == (1, [])


def test_a_reschedule_into_the_past_warns(service: Service) -> None:
    service.importer.apply([(2, appointment())], source="t", label="t")
    moved = service.importer.apply([(5, appointment(start=YESTERDAY))], source="t", label="t")
    assert moved.rescheduled == 1
    assert [(w.line, w.reason.startswith(PAST.format("A1"))) for w in moved.warnings] == [(5, True)]


def test_csv_warnings_name_the_line(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "past.csv"
    path.write_text(
        "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,"
        "procedure,start,duration_minutes,location,sedation,anticoagulant,status\n"
        "C1,CP1,Test,Patient,,c1@example.org,en-GB,Europe/London,BMBX,2026-12-10 09:30,60,"
        "Room 4,no,no,booked\n"
        "C2,CP2,Test,Patient,,c2@example.org,en-GB,Europe/London,BMBX,2026-11-18 09:30,60,"
        "Room 4,no,no,booked\n"
        "C3,CP3,Test,Patient,,c3@example.org,en-GB,Europe/London,BMBX,2026-11-17 09:30,60,"
        "Room 4,no,no,cancelled\n"
    )
    summary = import_csv_file(path, service.importer, service.import_defaults(None))
    assert (summary.imported, summary.cancel_not_found) == (2, 1)
    assert [(w.line, w.reason.startswith(PAST.format("C2"))) for w in summary.warnings] == [
        (3, True)
    ]


BOOKING = (
    b"MSH|^~\\&|PAS|RIVERSIDE|REMIND|RIVERSIDE|20261117090000||SIU^S12|CTRL-{n}|P|2.5\r"
    b"SCH|PLACER-{n}|H{n}|||||||||^^^{start}\r"
    b"PID|1||MRN{n}||Patient^Test||||||||07700900123^PRN^CP\r"
    b"AIS|1||BMBX\r"
)


def _booking(n: int, start: str) -> bytes:
    return BOOKING.replace(b"{n}", str(n).encode()).replace(b"{start}", start.encode())


def test_hl7_warnings_name_the_message_and_go_back_in_the_ack(service: Service) -> None:
    batch = _booking(1, "20261210093000") + _booking(2, "20261118093000")
    results, summary = apply_siu(service.importer, batch, service.import_defaults(None))
    assert [r.ack for r in results] == ["AA", "AA"] and summary.imported == 2
    assert [(w.line, w.reason.startswith(PAST.format("H2"))) for w in summary.warnings] == [
        (2, True)
    ]
    assert results[0].text == ""
    assert results[1].text.startswith(f"warning: {PAST.format('H2')}")
    # A cancellation of that past appointment: applied, no warning.
    cancel = _booking(2, "20261118093000").replace(b"SIU^S12", b"SIU^S15")
    cancel = cancel.replace(b"20261117090000", b"20261117100000")
    results, summary = apply_siu(service.importer, cancel, service.import_defaults(None))
    assert (results[0].ack, results[0].text, summary.cancelled) == ("AA", "", 1)


def test_fhir_warning_names_the_resource(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    fhir = ROOT / "tests" / "conformance" / "fhir"
    patient = json.loads((fhir / "r4-patient-example.json").read_text())
    appointment = json.loads((fhir / "r4-appointment-example.json").read_text())
    appointment["start"], appointment["end"] = "2026-11-18T09:30:00Z", "2026-11-18T10:30:00Z"
    appointment["serviceType"][0]["coding"][0]["code"] = "BMBX"
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "http://example.org/fhir/Patient/example", "resource": patient},
        {"resource": appointment},
    ]}  # fmt: skip
    answer = client.post("/fhir", json=bundle, headers=auth)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.headers["X-Import-Summary"])["in_the_past"] == 1
    warnings = [i for i in answer.json()["issue"] if i["severity"] == "warning"]
    assert [(i["code"], i["expression"]) for i in warnings] == [
        ("business-rule", ["Bundle.entry[1].resource.start"])
    ]
    assert warnings[0]["diagnostics"].startswith(f"Appointment/example: {PAST.format('example')}")


def test_json_and_csv_upload_warnings_name_the_item(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    one = {"appointment_id": "J1", "patient_id": "JP1", "first_name": "Test",
           "last_name": "Patient", "email": "j@example.org", "procedure": "BMBX",
           "start": "2026-12-10T09:30"}  # fmt: skip
    items = [one, {**one, "appointment_id": "J2", "start": "2026-11-18T09:30"}]
    body = client.post("/appointments", json=items, headers=auth).json()
    assert body["summary"]["imported"] == 2 and body["errors"] == []
    assert [(w["index"], w["field"]) for w in body["warnings"]] == [(1, "start")]
    assert body["warnings"][0]["reason"].startswith(PAST.format("J2"))
    csv = (
        "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,"
        "procedure,start,duration_minutes,location,sedation,anticoagulant,status\n"
        "U1,UP1,Test,Patient,,u@example.org,en-GB,Europe/London,BMBX,2026-11-18 09:30,60,"
        "Room 4,no,no,booked\n"
    )
    headers = {**auth, "Content-Type": "text/csv"}
    uploaded = client.post("/imports/csv", content=csv, headers=headers)
    assert uploaded.status_code == 200, uploaded.text
    upload = uploaded.json()
    assert [(w["index"], w["field"]) for w in upload["warnings"]] == [(2, "start")]
    # A cancellation of a past appointment: no warning.
    cancel = {**items[1], "status": "cancelled"}
    quiet = client.post("/appointments", json=cancel, headers=auth).json()
    assert quiet["summary"]["cancelled"] == 1 and quiet["warnings"] == []
