"""The planning horizon on a real database: an import stores what is due soon, the materializer
adds the rest as time passes, and the result is exactly the whole plan, sent exactly once."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import AppointmentStatus
from reminder_service.domain.planning import plan_reminders
from reminder_service.services.reporting import status_report
from reminder_service.store.tables import appointments, audit_log, reminders
from tests.factories import appointment, local, walk_clock

PLANNED = ("step_id", "channel", "template", "nominal_at", "due_at", "not_after", "status",
           "reason", "recipient")  # fmt: skip


def apply(service: Service, *appts):  # type: ignore[no-untyped-def]
    return service.importer.apply(enumerate(appts, 2), source="test", label="test")


def stored(service: Service, **where: Any) -> list[Any]:
    query = select(reminders).order_by(reminders.c.due_at, reminders.c.id)
    for key, value in where.items():
        query = query.where(reminders.c[key] == value)
    with service.engine.connect() as conn:
        return list(conn.execute(query).mappings().all())


def resume_at(service: Service) -> Any:
    with service.engine.connect() as conn:
        return conn.execute(select(appointments.c.plan_resume_at)).scalar_one()


def whole_plan(service: Service, appt, now) -> set[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    protocol = service.catalog.protocol_for(appt.procedure)
    clinic = service.catalog.clinics.get(appt.clinic_id)
    assert protocol is not None and clinic is not None
    plans = plan_reminders(appt, protocol, clinic.send_window, now, now)
    # The row's values: enums as their stored strings.
    return {tuple(getattr(v, "value", v) for v in p) for p in plans}


def test_an_import_stores_only_what_is_due_within_the_horizon(service: Service, clock) -> None:  # type: ignore[no-untyped-def]
    summary = apply(service, appointment())  # Thu 10 Dec, three weeks ahead
    assert {(r["step_id"], r["channel"]) for r in stored(service)} == {
        ("booked", "sms"),
        ("booked", "email"),
    }
    assert summary.reminders_planned == 2
    # The first step left out is medicines, Thu 3 Dec 10:00: the plan resumes no later.
    resume = resume_at(service)
    assert clock.now + timedelta(hours=48) < resume <= local("Europe/London", 2026, 12, 3, 10)
    with service.engine.connect() as conn:
        detail = json.loads(conn.execute(select(audit_log.c.detail)).scalar_one())
    assert detail == {"version": 1, "planned": 2, "more_from": resume.isoformat()}
    assert status_report(service.engine).appointments_with_later_reminders == 1


def test_materializing_as_time_passes_stores_exactly_the_whole_plan_once(service, clock) -> None:  # type: ignore[no-untyped-def]
    imported_at = clock.now
    apply(service, appointment())
    end = appointment().start + timedelta(days=5)
    while clock.now < end:
        clock.advance(hours=7)
        service.materializer.materialize()
        # Everything due within the horizon is stored before it is due.
        horizon_end = clock.now + timedelta(hours=48)
        expected = whole_plan(service, appointment(), imported_at)
        due_soon = {p for p in expected if p[4] <= horizon_end}
        have = {tuple(r[c] for c in PLANNED) for r in stored(service)}
        assert due_soon <= have
    rows = stored(service)
    assert len(rows) == len({tuple(r[c] for c in PLANNED) for r in rows})  # no duplicates
    assert {tuple(r[c] for c in PLANNED) for r in rows} == whole_plan(
        service, appointment(), imported_at
    )
    assert resume_at(service) is None
    assert status_report(service.engine).appointments_with_later_reminders == 0


def test_materializing_twice_at_the_same_moment_adds_nothing(service, clock) -> None:  # type: ignore[no-untyped-def]
    apply(service, appointment())
    clock.now = local("Europe/London", 2026, 12, 2, 9)
    first = service.materializer.materialize()
    assert (first.appointments, first.reminders) == (1, 2)  # medicines, Thu 3 Dec 10:00
    again = service.materializer.materialize()
    assert (again.appointments, again.reminders) == (0, 0)
    assert [r["step_id"] for r in stored(service)] == ["booked"] * 2 + ["medicines"] * 2
    with service.engine.connect() as conn:
        events = conn.execute(select(audit_log.c.event, audit_log.c.reason)).all()
    assert events[-1] == ("planned", "planning horizon reached")


def test_a_reschedule_after_part_of_the_plan_is_stored_follows_the_new_time(service, clock) -> None:  # type: ignore[no-untyped-def]
    apply(service, appointment())
    clock.now = local("Europe/London", 2026, 12, 2, 9)
    service.materializer.materialize()  # medicines stored
    moved = appointment(start=appointment().start + timedelta(days=7))
    assert apply(service, moved).rescheduled == 1
    medicines = stored(service, step_id="medicines")
    assert {r["status"] for r in medicines} == {"cancelled"}
    assert {r["reason"] for r in medicines} == {"appointment rescheduled"}
    # Walk on past the new date: what is stored for version 2 is the new whole plan.
    rescheduled_at = clock.now
    while clock.now < moved.start + timedelta(days=5):
        clock.advance(hours=6)
        service.materializer.materialize()
    current = {tuple(r[c] for c in PLANNED) for r in stored(service) if r["status"] != "cancelled"}
    assert current == whole_plan(service, moved, rescheduled_at)
    assert {r["appointment_version"] for r in stored(service, status="pending")} == {2}


def test_a_cancellation_stops_the_rest_of_the_plan(service, clock) -> None:  # type: ignore[no-untyped-def]
    apply(service, appointment())
    clock.now = local("Europe/London", 2026, 12, 2, 9)
    service.materializer.materialize()
    apply(service, appointment(status=AppointmentStatus.CANCELLED))
    assert resume_at(service) is None
    clock.now = appointment().start
    assert service.materializer.materialize().reminders == 0
    assert stored(service, status="pending") == []


def test_preview_shows_the_whole_plan_including_what_is_not_stored_yet(service, clock) -> None:  # type: ignore[no-untyped-def]
    apply(service, appointment())
    preview = service.previewer().preview("A1")
    planned = [line for line in preview.lines if line.status != "disabled"]
    expected = whole_plan(service, appointment(), clock.now)
    assert {(line.step, line.channel, line.due_at) for line in planned} == {
        (p[0], p[1], p[4]) for p in expected
    }
    later = [line for line in planned if line.reminder_id is None]
    assert len(later) == len(expected) - 2  # all but the stored booking messages
    day_before = next(line for line in later if (line.step, line.channel) == ("day_before", "sms"))
    assert day_before.due_at is not None and day_before.due_at.isoformat() == (
        "2026-12-09T18:00:00+00:00"
    )
    assert day_before.body and "see you at 09:30" in day_before.body  # rendered like any other


def test_a_protocol_removed_from_the_configuration_stops_its_plans_with_a_staff_alert(
    service, settings, clock, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    apply(service, appointment())
    config = tmp_path / "config"
    shutil.copytree(settings.config_dir, config)
    protocol = config / "protocols" / "bone_marrow_biopsy.yaml"
    protocol.write_text(protocol.read_text().replace("id: bone_marrow_biopsy", "id: renamed", 1))
    templates = tmp_path / "templates"
    shutil.copytree(settings.templates_dir, templates)
    (templates / "bone_marrow_biopsy").rename(templates / "renamed")
    changed = bootstrap.build(replace(settings, config_dir=config, templates_dir=templates), clock)
    try:
        clock.now = local("Europe/London", 2026, 12, 2, 9)
        assert changed.materializer.materialize().reminders == 0
        assert resume_at(changed) is None
        alerts = status_report(changed.engine).staff_alerts
        assert [a["reason"] for a in alerts] == [
            "plan stopped: protocol 'bone_marrow_biopsy' is not configured"
        ]
    finally:
        changed.engine.dispose()


def test_preview_forecasts_which_texts_give_way_to_the_sms_caps(service, clock) -> None:  # type: ignore[no-untyped-def]
    # Booked five days ahead: the blood-thinner plan (critical) catches up now, the same day as
    # the booking text (standard), over the cap of 1 a day. The booking text gives way.
    clock.now = appointment().start - timedelta(days=5)
    apply(service, appointment())
    preview = service.previewer().preview("A1")
    forecast = {
        line.step: line.reason
        for line in preview.lines
        if line.channel == "sms" and "give way to the SMS caps" in line.reason
    }
    assert list(forecast) == ["booked"]
    assert forecast["booked"].endswith(
        "over the SMS cap (1 a day, 3 in 7 days): merged into the next text"
    )
    walk_clock(service, clock, appointment().start + timedelta(days=2))
    rows = stored(service, channel="sms")
    gave_way = {r["step_id"] for r in rows if r["reason"].startswith("over the SMS cap")}
    assert gave_way == set(forecast)  # what preview said is what dispatch did
    # Its line rode on the blood-thinner text sent the same minute, not days later.
    by_step = {r["step_id"]: r for r in rows}
    assert by_step["booked"]["merged_into"] == by_step["medicines"]["id"]
    assert by_step["medicines"]["sent_at"] == by_step["booked"]["updated_at"]
