"""A cancellation or no-show always applies: its appointment's id is all it needs, from any source.

Patient safety: a refused cancellation leaves the reminders of a cancelled biopsy going, and a
patient may stop their blood thinners for nothing. A cancellation for an id never seen here is
audited and reported as such, never counted as a cancellation.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import AppointmentStatus, Cancellation
from reminder_service.importers.csv_rows import parse_csv
from reminder_service.services.auditing import audit_trail
from reminder_service.services.fhir_import import apply_fhir
from reminder_service.services.hl7_import import apply_siu
from reminder_service.services.previewing import NotFound
from reminder_service.store.tables import appointments, audit_log, reminders
from tests.factories import appointment


def _open_reminders(service: Service, external_id: str) -> int:
    with service.engine.connect() as conn:
        query = (
            select(reminders.c.id)
            .join(appointments, appointments.c.id == reminders.c.appointment_id)
            .where(appointments.c.external_id == external_id)
            .where(reminders.c.status == "pending")
        )
        return len(conn.execute(query).all())


def _status(service: Service, external_id: str) -> str | None:
    with service.engine.connect() as conn:
        query = select(appointments.c.status).where(appointments.c.external_id == external_id)
        return conn.execute(query).scalar_one_or_none()


def _booked(service: Service, external_id: str = "A1") -> None:
    summary = service.importer.apply([(1, appointment(external_id=external_id))], source="t",
                                     label="t")  # fmt: skip
    assert summary.imported == 1
    assert _open_reminders(service, external_id) > 0


# An S15 as some engines send it: the ids and nothing else of the appointment (no AIS-3, no
# SCH-7/8, no start, no PID at all).
BARE_S15 = (
    b"MSH|^~\\&|PAS|RIVERSIDE|REMIND|RIVERSIDE|20261120093000||SIU^S15|CTRL-15|P|2.5\r"
    b"SCH|PLACER-1|A1\r"
)


def test_hl7_s15_with_only_the_appointment_id_cancels(service: Service) -> None:
    _booked(service)
    results, summary = apply_siu(service.importer, BARE_S15, service.import_defaults(None))
    [result] = results
    assert result.ack == "AA", result.text
    assert result.change.appointment == Cancellation("A1")
    # What was missing is said, as warnings naming the fields, not as a refusal.
    assert {w.where for w in result.change.warnings} >= {"PID-3"}
    assert summary.cancelled == 1
    assert _status(service, "A1") == "cancelled"
    assert _open_reminders(service, "A1") == 0


def test_hl7_s26_no_show_with_only_the_id_stops_the_plan(service: Service) -> None:
    _booked(service)
    message = BARE_S15.replace(b"SIU^S15", b"SIU^S26")
    results, _ = apply_siu(service.importer, message, service.import_defaults(None))
    assert results[0].ack == "AA"
    assert results[0].change.appointment == Cancellation("A1", no_show=True)
    assert _open_reminders(service, "A1") == 0


def test_hl7_s17_deletion_falls_back_to_the_placer_id(service: Service) -> None:
    _booked(service, "PLACER-7")
    message = b"MSH|^~\\&|PAS|X|R|X|20261120093000||SIU^S17|C17|P|2.3\rSCH|PLACER-7\r"
    results, summary = apply_siu(service.importer, message, service.import_defaults(None))
    assert results[0].ack == "AA"
    assert summary.cancelled == 1 and _open_reminders(service, "PLACER-7") == 0


def test_a_cancellation_with_no_id_at_all_is_refused(service: Service) -> None:
    message = b"MSH|^~\\&|PAS|X|R|X|20261120093000||SIU^S15|C1|P|2.5\rSCH|\r"
    results, summary = apply_siu(service.importer, message, service.import_defaults(None))
    assert results[0].ack == "AE"
    assert "SCH-2" in results[0].text
    assert summary.cancelled == 0


def test_a_cancellation_for_an_unknown_id_is_audited_not_counted(service: Service) -> None:
    message = BARE_S15.replace(b"|A1\r", b"|NEVER-SEEN\r")
    results, summary = apply_siu(service.importer, message, service.import_defaults(None))
    assert results[0].ack == "AA"  # processed: there is nothing here to cancel
    assert (summary.cancelled, summary.cancel_not_found) == (0, 1)
    with service.engine.connect() as conn:
        [entry] = conn.execute(
            select(audit_log).where(audit_log.c.event == "cancel_not_found")
        ).mappings()
    assert entry["appointment_id"] is None
    assert json.loads(entry["detail"])["external_id"] == "NEVER-SEEN"
    assert "not known here" in entry["reason"]
    assert _status(service, "NEVER-SEEN") is None


def test_a_described_cancellation_for_an_unknown_id_is_kept_but_not_counted(
    service: Service,
) -> None:
    # Stored as cancelled, so an older booking for it arriving later is known to be stale.
    described = appointment(external_id="A5", status=AppointmentStatus.CANCELLED)
    summary = service.importer.apply([(1, described)], source="t", label="t")
    assert (summary.cancelled, summary.cancel_not_found) == (0, 1)
    assert _status(service, "A5") == "cancelled"
    assert _open_reminders(service, "A5") == 0


def test_csv_cancelled_row_with_only_an_id_cancels(service: Service) -> None:
    _booked(service)
    header = (
        "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,"
        "procedure,start,duration_minutes,location,sedation,anticoagulant,status\n"
    )
    data = (header + "A1,,,,,,,,,,,,,,cancelled\nNEVER,,,,,,,,,,,,,,cancelled\n").encode()
    parsed = parse_csv(data, filename="c.csv", defaults=service.import_defaults(None))
    summary = service.importer.apply(parsed.rows, source="csv", label="c.csv")
    assert (summary.cancelled, summary.cancel_not_found, summary.rejected) == (1, 1, 0)
    assert _open_reminders(service, "A1") == 0


def test_fhir_cancellation_with_only_an_identifier_cancels(service: Service) -> None:
    _booked(service)
    document = {
        "resourceType": "Appointment",
        "status": "entered-in-error",
        "identifier": [{"value": "A1", "type": {"coding": [{"code": "FILL"}]}}],
    }
    result = apply_fhir(service.importer, document, service.import_defaults(None))
    assert result.summary is not None and result.summary.cancelled == 1
    assert {i.severity for i in result.issues} <= {"warning", "information"}
    assert _open_reminders(service, "A1") == 0


def test_fhir_proposed_is_understood_and_stores_nothing(service: Service) -> None:
    document = {
        "resourceType": "Appointment",
        "status": "waitlist",
        "id": "W1",
        "participant": [{"actor": {"reference": "Patient/x"}, "status": "needs-action"}],
    }
    result = apply_fhir(service.importer, document, service.import_defaults(None))
    assert result.summary is not None and result.summary.counts() == dict.fromkeys(
        result.summary.counts(), 0
    )
    [issue] = result.issues
    assert issue.severity == "information" and "not booked yet" in issue.diagnostics
    assert _status(service, "W1") is None


def test_the_audit_trail_of_an_unknown_id_shows_its_cancellation(service: Service) -> None:
    message = BARE_S15.replace(b"|A1\r", b"|NEVER-SEEN\r")
    apply_siu(service.importer, message, service.import_defaults(None))
    apply_siu(service.importer, message.replace(b"NEVER-SEEN", b"NEVER-SEEN-2"),
              service.import_defaults(None))  # fmt: skip
    [entry] = audit_trail(service.engine, "NEVER-SEEN")
    assert entry.event == "cancel_not_found" and entry.detail is not None
    assert entry.detail["external_id"] == "NEVER-SEEN"
    with pytest.raises(NotFound):
        audit_trail(service.engine, "NEVER")


def test_an_older_booking_after_a_bare_cancellation_stays_cancelled(service: Service) -> None:
    # The engine sent S12 (09:00) then a bare S15 (09:30), and delivered them the other way round.
    cancel = BARE_S15.replace(b"|A1\r", b"|LATE-1\r")
    booking = (
        b"MSH|^~\\&|PAS|RIVERSIDE|REMIND|RIVERSIDE|20261120090000||SIU^S12|CTRL-12|P|2.5\r"
        b"SCH|PLACER-9|LATE-1|||||||||^^^20261210093000\r"
        b"PID|1||MRN9||Patient^Test||||||||07700900123^PRN^CP\r"
        b"AIS|1||BMBX\r"
    )
    apply_siu(service.importer, cancel, service.import_defaults(None))
    results, summary = apply_siu(service.importer, booking, service.import_defaults(None))
    assert results[0].ack == "AA"
    assert (summary.imported, summary.out_of_order) == (0, 1)
    assert _status(service, "LATE-1") is None
    assert [e.event for e in audit_trail(service.engine, "LATE-1")] == [
        "cancel_not_found",
        "out_of_order",
    ]
    # A newer booking after that cancellation is a real new booking.
    newer = booking.replace(b"20261120090000", b"20261120100000")
    _, again = apply_siu(service.importer, newer, service.import_defaults(None))
    assert again.imported == 1 and _status(service, "LATE-1") == "booked"
