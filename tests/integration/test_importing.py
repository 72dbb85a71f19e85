"""Importing into a real database: idempotent, reschedules and cancels re-plan correctly."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bench.generate_appointments import generate, write_csv
from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import AppointmentStatus, Tristate
from reminder_service.importers.csv_rows import FileRejected, ImportDefaults
from reminder_service.services.csv_import import import_csv_file
from reminder_service.services.reporting import status_report
from reminder_service.settings import Settings
from reminder_service.store.tables import appointments, audit_log, imports, reminders
from tests.factories import CONFIG_DIR, TEMPLATES_DIR, appointment, local, patient


def apply(service: Service, *appts):  # type: ignore[no-untyped-def]
    return service.importer.apply(enumerate(appts, 2), source="test", label="test")


def rows(service: Service, **where):  # type: ignore[no-untyped-def]
    query = select(reminders).order_by(reminders.c.id)
    for key, value in where.items():
        query = query.where(reminders.c[key] == value)
    with service.engine.connect() as conn:
        return conn.execute(query).mappings().all()


def count(service: Service, table) -> int:  # type: ignore[no-untyped-def]
    with service.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_new_appointment_is_stored_and_planned(whole_plan_service: Service) -> None:
    service = whole_plan_service
    summary = apply(service, appointment())
    assert summary.counts()["imported"] == 1
    planned = rows(service)
    assert summary.reminders_planned == len(planned) == 13
    assert {r["status"] for r in planned} == {"pending"}
    # The planning decisions are in the appointment's audit entry, skipped ones with reasons.
    apply(service, appointment(external_id="A2", sedation=Tristate.NO))
    with service.engine.connect() as conn:
        entries = conn.execute(
            select(audit_log.c.event, audit_log.c.detail).order_by(audit_log.c.id)
        ).all()
    skipped = "condition not met: sedation is unknown or yes"
    assert [(event, json.loads(detail)) for event, detail in entries] == [
        ("imported", {"version": 1, "planned": 13}),
        (
            "imported",
            {
                "version": 1,
                "planned": 11,
                "skipped": {"escort/email": skipped, "escort/sms": skipped},
            },
        ),
    ]


def test_reimporting_the_same_appointment_changes_nothing(service, clock) -> None:  # type: ignore[no-untyped-def]
    apply(service, appointment())
    before = (rows(service), count(service, audit_log))
    clock.advance(hours=3)
    summary = apply(service, appointment())
    assert summary.unchanged == 1 and summary.reminders_planned == 0
    assert (rows(service), count(service, audit_log)) == before
    assert count(service, imports) == 2  # the import itself is recorded


def test_reschedule_replans_pending_and_keeps_history(whole_plan_service, clock) -> None:  # type: ignore[no-untyped-def]
    service = whole_plan_service
    apply(service, appointment())
    report = service.dispatcher.dispatch_due()  # the booking confirmation goes out now
    assert report.by_status == {"sent": 2}
    clock.advance(days=1)
    moved = appointment(start=appointment().start + timedelta(days=7))
    summary = apply(service, moved)
    assert summary.rescheduled == 1
    cancelled = rows(service, status="cancelled")
    assert len(cancelled) == 11 and {r["reason"] for r in cancelled} == {"appointment rescheduled"}
    assert len(rows(service, status="sent")) == 2
    pending = rows(service, status="pending")
    assert {r["appointment_version"] for r in pending} == {2}
    day_before = next(r for r in pending if r["step_id"] == "day_before")
    assert day_before["nominal_at"] == moved.start.replace(hour=18, minute=0) - timedelta(days=1)
    # A reschedule sends a new booking message (the template says the appointment moved).
    assert {(r["step_id"], r["channel"]) for r in pending} >= {
        ("booked", "sms"),
        ("booked", "email"),
    }


def test_cancellation_cancels_pending_reminders(whole_plan_service, clock) -> None:  # type: ignore[no-untyped-def]
    service = whole_plan_service
    apply(service, appointment())
    clock.advance(hours=1)
    summary = apply(service, appointment(status=AppointmentStatus.CANCELLED))
    assert summary.cancelled == 1 and summary.reminders_cancelled == 13
    assert rows(service, status="pending") == []
    with service.engine.connect() as conn:
        assert conn.execute(select(appointments.c.status)).scalar_one() == "cancelled"


def test_flag_and_contact_changes_replan_only_what_changed(whole_plan_service, clock) -> None:  # type: ignore[no-untyped-def]
    service = whole_plan_service
    apply(service, appointment())
    clock.advance(hours=1)
    summary = apply(
        service, appointment(sedation=Tristate.NO, patient=patient(mobile="+447700900456"))
    )
    assert summary.updated == 1
    escort = rows(service, step_id="escort")
    assert [r["status"] for r in escort] == ["cancelled", "cancelled", "skipped", "skipped"]
    assert len(rows(service, status="pending")) == 11


def test_unknown_procedure_is_stored_but_not_served_and_unknown_clinic_is_rejected(service) -> None:  # type: ignore[no-untyped-def]
    summary = apply(
        service,
        appointment(external_id="X1", procedure="MRI"),
        appointment(external_id="X2", clinic_id="nowhere"),
    )
    assert summary.not_served == 1 and summary.rejected == 1
    assert [(e.line, e.column) for e in summary.errors] == [(3, "clinic")]
    assert rows(service) == []


def test_a_repeated_id_in_one_import_applies_in_order(service) -> None:  # type: ignore[no-untyped-def]
    first = appointment()
    second = appointment(start=first.start + timedelta(days=1))
    summary = apply(service, first, second)
    assert (summary.imported, summary.rescheduled) == (1, 1)
    with service.engine.connect() as conn:
        assert conn.execute(select(appointments.c.start_at)).scalar_one() == second.start


def test_alert_staff_policy_records_an_alert_that_status_shows(settings, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config"
    shutil.copytree(settings.config_dir, config)
    protocol = config / "protocols" / "bone_marrow_biopsy.yaml"
    text = protocol.read_text()
    escort = text.index("- id: escort")
    late = text.index("late: catch_up", escort)
    protocol.write_text(text[:late] + "late: alert_staff" + text[late + len("late: catch_up") :])
    service = bootstrap.build(replace(settings, config_dir=config), clock)
    try:
        clock.now = appointment().start - timedelta(days=1, hours=12)  # escort's 10:00 has passed
        apply(service, appointment())
        escort_rows = rows(service, step_id="escort")
        patient_rows = [r for r in escort_rows if r["channel"] != "staff"]
        assert {r["reason"] for r in patient_rows} == {
            "booked too late for this step; staff alerted"
        }
        # One alert email to the clinic's staff for the step, sent like any reminder.
        [alert] = [r for r in escort_rows if r["channel"] == "staff"]
        assert alert["status"] == "pending"
        assert alert["alert"] == "escort: booked too late for this step; staff alerted"
        service.dispatcher.dispatch_due()
        assert rows(service, channel="staff")[0]["status"] == "sent"
        report = status_report(service.engine)
        assert sorted((a["appointment_id"], a["reason"]) for a in report.staff_alerts) == [
            ("A1", "escort/email: booked too late for this step; staff alerted"),
            ("A1", "escort/sms: booked too late for this step; staff alerted"),
        ]
    finally:
        service.engine.dispose()


def test_the_import_record_counts_rows_rejected_while_parsing(service, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "two.csv"
    header = "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,"
    header += "procedure,start,duration_minutes,location,sedation,anticoagulant,status\n"
    good = "A1,P1,Test,Patient,,a@example.org,,,BMBX,2026-12-10 09:30,60,,yes,no,booked\n"
    bad = "A2,P2,Test,Patient,,not-an-email,,,BMBX,2026-12-10 09:30,60,,yes,no,booked\n"
    path.write_text(header + good + bad)
    defaults = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
    summary = import_csv_file(path, service.importer, defaults, workers=0)
    assert (summary.imported, summary.rejected) == (1, 1)
    assert [(e.line, e.column) for e in summary.errors] == [(3, "email")]
    with service.engine.connect() as conn:
        recorded = json.loads(conn.execute(select(imports.c.summary)).scalar_one())
    assert (recorded["imported"], recorded["rejected"]) == (1, 1)


def test_validating_in_worker_processes_gives_the_same_database(clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows, expected, _bad = generate(600, seed=3, today=clock.now.date())
    path = tmp_path / "mix.csv"
    write_csv(path, rows, excel=True)
    defaults = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
    snapshots = []
    for workers in (0, 2):
        database = tmp_path / f"w{workers}.db"
        settings = Settings(f"sqlite:///{database}", tmp_path, CONFIG_DIR, TEMPLATES_DIR)
        built = bootstrap.build(settings, clock)
        try:
            summary = import_csv_file(path, built.importer, defaults, workers=workers)
            assert (summary.imported, summary.rejected) == (expected.imported, expected.rejected)
            with built.engine.connect() as conn:
                columns = [c for c in reminders.c if c.name not in {"id", "appointment_id"}]
                planned = [appointments.c.planned_at, appointments.c.plan_resume_at]
                snapshots.append(
                    conn.execute(
                        select(appointments.c.external_id, *planned, *columns)
                        .join(appointments, appointments.c.id == reminders.c.appointment_id)
                        .order_by(
                            appointments.c.external_id, reminders.c.step_id, reminders.c.channel
                        )
                    ).all()
                )
        finally:
            built.engine.dispose()
    assert snapshots[0] == snapshots[1] and len(snapshots[0]) > 1000


def test_replan_applies_a_changed_protocol_to_booked_appointments(
    whole_plan_service, settings, clock, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    service = whole_plan_service
    apply(service, appointment())
    service.dispatcher.dispatch_due()  # the booking messages go out
    config = tmp_path / "config"
    shutil.copytree(settings.config_dir, config)
    protocol = config / "protocols" / "bone_marrow_biopsy.yaml"
    text = protocol.read_text()
    protocol.write_text(text.replace("1 day before start at 18:00", "1 day before start at 17:00"))
    changed = bootstrap.build(
        replace(settings, config_dir=config, planning_horizon_hours=90 * 24), clock
    )
    try:
        clock.advance(hours=1)
        summary = changed.importer.replan()
        counts = (summary.updated, summary.reminders_planned, summary.reminders_cancelled)
        assert counts == (1, 2, 2)
        day_before = rows(changed, step_id="day_before")
        assert [(r["status"], r["reason"]) for r in day_before] == [
            ("cancelled", "protocol or clinic settings changed"),
            ("cancelled", "protocol or clinic settings changed"),
            ("pending", "planned: 1 day before start at 17:00"),
            ("pending", "planned: 1 day before start at 17:00"),
        ]
        assert len(rows(changed, status="sent")) == 2  # history untouched, nothing re-sent
        again = changed.importer.replan()
        assert (again.updated, again.unchanged, again.reminders_planned) == (0, 1, 0)
    finally:
        changed.engine.dispose()


def test_no_sms_consent_means_email_only_and_suppression_stops_everything(
    whole_plan_service, clock
) -> None:  # type: ignore[no-untyped-def]
    service = whole_plan_service
    apply(service, appointment(patient=patient(sms_consent="")))
    sms_rows = rows(service, channel="sms")
    assert {r["status"] for r in sms_rows} == {"skipped"}
    assert {r["reason"] for r in sms_rows} == {"no SMS consent: email only"}
    assert {r["status"] for r in rows(service, channel="email")} == {"pending"}
    clock.advance(hours=1)
    summary = apply(service, appointment(patient=patient(sms_consent="", deceased=True)))
    assert summary.updated == 1
    assert rows(service, status="pending") == []
    skipped = {r["reason"] for r in rows(service, status="skipped")}
    assert "the patient is recorded as deceased" in skipped
    assert service.dispatcher.dispatch_due().claimed == 0


def _plan_state(service: Service):  # type: ignore[no-untyped-def]
    return [
        (r["id"], r["step_id"], r["channel"], r["status"], r["nominal_at"], r["due_at"])
        for r in rows(service)
    ]


@pytest.mark.parametrize("hours_later", [0, 1, 30])
@pytest.mark.parametrize("horizon_hours", [48, 90 * 24])
def test_replan_with_nothing_changed_changes_nothing(
    settings, clock, hours_later, horizon_hours
) -> None:  # type: ignore[no-untyped-def]
    # Booked in the evening, so the booking texts wait for the send window to open: their due
    # time was decided at booking and must not move to the moment of the replan.
    service = bootstrap.build(replace(settings, planning_horizon_hours=horizon_hours), clock)
    clock.now = local("Europe/London", 2026, 11, 19, 21, 0)
    apply(service, appointment(), appointment(external_id="A2", patient=patient(external_id="P2")))
    before = (_plan_state(service), count(service, audit_log))
    clock.advance(hours=hours_later)
    summary = service.importer.replan()
    assert (summary.updated, summary.unchanged) == (0, 2)
    assert (summary.reminders_planned, summary.reminders_cancelled) == (0, 0)
    assert (_plan_state(service), count(service, audit_log)) == before
    service.engine.dispose()


def test_replan_keeps_what_the_dispatcher_decided(service, clock) -> None:  # type: ignore[no-untyped-def]
    # Five days ahead: the booking and the catch-up medicines texts are both due now; the SMS
    # caps (one a day) keep the medicines text and skip the booking text (it goes by email).
    # That skip is the dispatcher's decision, made at its time: replanning must not turn it
    # back into a pending text, which would be sent later after all.
    soon = local("Europe/London", 2026, 11, 24, 9, 30)
    apply(service, appointment(start=soon))
    service.dispatcher.dispatch_due()
    skipped = rows(service, step_id="booked", channel="sms")
    assert [r["status"] for r in skipped] == ["skipped"]
    assert skipped[0]["reason"].startswith("over the SMS cap")
    before = (_plan_state(service), count(service, audit_log))
    clock.advance(hours=1)
    summary = service.importer.replan()
    assert (summary.updated, summary.unchanged, summary.reminders_cancelled) == (0, 1, 0)
    assert (_plan_state(service), count(service, audit_log)) == before


def _state(service: Service) -> tuple[int, ...]:
    return tuple(count(service, t) for t in (appointments, reminders, audit_log, imports))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_refused_near_its_end_leaves_nothing_written(
    service, clock, tmp_path, workers
) -> None:  # type: ignore[no-untyped-def]
    rows, _expected, _bad = generate(4_500, seed=5, today=clock.now.date())
    defaults = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
    first = tmp_path / "first.csv"
    write_csv(first, rows[:50], excel=False)
    import_csv_file(first, service.importer, defaults, workers=0)
    before = _state(service)
    path = tmp_path / "big.csv"
    write_csv(path, rows, excel=False)
    # Several chunks in, the second-last row holds text that is not UTF-8.
    data = path.read_bytes()
    end = data.rindex(b"\n", 0, data.rindex(b"\n", 0, len(data) - 1))
    path.write_bytes(data[:end] + b"\n\xff" + data[end + 1 :])

    with pytest.raises(FileRejected, match="line 4500 is not valid UTF-8"):
        import_csv_file(path, service.importer, defaults, workers=workers)

    assert _state(service) == before


def test_an_import_that_fails_part_way_leaves_nothing_written(service, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows, _expected, _bad = generate(4_500, seed=5, today=clock.now.date())
    path = tmp_path / "big.csv"
    write_csv(path, rows, excel=False)
    defaults = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
    applied = []

    def crash_late(rows: int) -> None:  # told after each chunk, inside the transaction
        applied.append(rows)
        if len(applied) == 4:
            raise RuntimeError("the process dies here")

    with pytest.raises(RuntimeError):
        import_csv_file(path, service.importer, defaults, workers=0, progress=crash_late)

    assert sum(applied) >= 3_000
    assert _state(service) == (0, 0, 0, 0)
