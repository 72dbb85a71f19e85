"""Every critical step reaches the patient, or the clinic's staff hear of it in time.

One table: sedation yes/no/unknown x blood thinner yes/no/unknown x email yes/no x SMS consent
yes/no x booked 1, 2, 3, 7 or 14 days ahead: 180 patients, each with one biopsy, imported
together and run through to the days after their procedure under the shipped protocol and the
default SMS caps (1 a day, 3 in 7 days). For every critical step that applies to the patient:
- a patient who may be texted gets it by text (the caps never take a critical text away), or
- no channel can reach them, or the booking came too late for it, and staff were alerted at the
  import itself, not when the message was due;
- and whoever has an email address gets it by email as the protocol says.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import Tristate
from reminder_service.domain.protocol import Channel
from reminder_service.domain.reachability import critical_for
from reminder_service.store.tables import appointments, reminders
from tests.factories import appointment, local, patient, walk_clock

TRISTATES = (Tristate.YES, Tristate.NO, Tristate.UNKNOWN)
DAYS_AHEAD = (1, 2, 3, 7, 14)
CASES = list(itertools.product(TRISTATES, TRISTATES, (True, False), (True, False), DAYS_AHEAD))


def booking(index: int, case: tuple[Any, ...], booked_at: Any) -> Any:
    sedation, anticoagulant, has_email, consent, ahead = case
    start = (booked_at + timedelta(days=ahead)).replace(hour=9, minute=30)
    person = patient(
        external_id=f"P{index}",
        mobile=f"+4477009{index:05d}",
        email=f"patient{index}@example.org" if has_email else None,
        sms_consent="" if not consent else patient().sms_consent,
    )
    return appointment(
        external_id=f"M{index}",
        patient=person,
        start=start,
        sedation=sedation,
        anticoagulant=anticoagulant,
    )


def test_every_critical_step_is_sent_or_staff_are_alerted_in_time(service: Service, clock) -> None:  # type: ignore[no-untyped-def]
    booked_at = local("Europe/London", 2026, 11, 16, 11, 0)  # a Monday, 11:00
    clock.now = booked_at
    bookings = [booking(i, case, booked_at) for i, case in enumerate(CASES)]
    summary = service.importer.apply(enumerate(bookings, 2), source="t", label="matrix")
    assert summary.imported == len(CASES)
    walk_clock(service, clock, booked_at + timedelta(days=max(DAYS_AHEAD) + 3))

    protocol = service.catalog.protocol("bone_marrow_biopsy")
    critical = [step for step in protocol.steps if step.critical and step.enabled]
    assert {s.id for s in critical} >= {"medicines", "escort", "day_before", "after_care"}
    with service.engine.connect() as conn:
        query = select(appointments.c.external_id, appointments.c.id)
        ids = {external: pk for external, pk in conn.execute(query).tuples()}
        rows = conn.execute(select(reminders)).mappings().all()
    by_appointment: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_appointment[row["appointment_id"]].append(row)

    failures = []
    for case, appt in zip(CASES, bookings, strict=True):
        mine = by_appointment[ids[appt.external_id]]
        for step in critical:
            if not critical_for(step, appt):
                continue  # e.g. the blood-thinner text, for a patient on none
            problem = _critical_step_problem(step, appt, mine, booked_at)
            if problem:
                failures.append((case, step.id, problem))
    assert failures == []


def _critical_step_problem(step: Any, appt: Any, rows: list[Any], booked_at: Any) -> str:
    """Why this critical step neither reached the patient as it should nor alerted staff at the
    import, or ""."""
    of_step = [r for r in rows if r["step_id"] == step.id]
    sent = {r["channel"] for r in of_step if r["status"] == "sent" and r["channel"] != "staff"}
    alerts = [r for r in of_step if r["channel"] == "staff"]
    alerted_at_import = any(r["status"] == "sent" and r["created_at"] == booked_at for r in alerts)
    wants = {rule.channel for rule in step.channels if rule.condition.holds(appt)}
    textable = appt.patient.sms_consent and appt.patient.mobile
    if alerted_at_import:
        return ""  # staff were told at once (no channel, or booked too late for it)
    if alerts:
        return f"staff alerted only later: {[r['alert'] for r in alerts]}"
    if Channel.SMS in wants and textable and "sms" not in sent:
        reasons = [r["reason"] for r in of_step if r["channel"] == "sms"]
        return f"no text though the patient may be texted: {reasons}"
    if Channel.EMAIL in wants and appt.patient.email and "email" not in sent:
        return f"no email: {[r['reason'] for r in of_step if r['channel'] == 'email']}"
    if not sent:
        return "reached no one and staff were not told"
    return ""


def test_the_table_covers_unreachable_and_late_patients(service: Service, clock) -> None:  # type: ignore[no-untyped-def]
    """The matrix is not vacuous: among its patients some can be reached by no channel, and
    some are booked too late for the escort advice; both alert staff at the import."""
    booked_at = local("Europe/London", 2026, 11, 16, 11, 0)
    clock.now = booked_at
    unreachable = booking(0, (Tristate.YES, Tristate.YES, False, False, 14), booked_at)
    late = booking(1, (Tristate.YES, Tristate.NO, True, True, 1), booked_at)
    service.importer.apply(enumerate([unreachable, late], 2), source="t", label="t")
    with service.engine.connect() as conn:
        alerts = conn.execute(
            select(appointments.c.external_id, reminders.c.step_id, reminders.c.alert)
            .join(appointments, appointments.c.id == reminders.c.appointment_id)
            .where(reminders.c.channel == "staff", reminders.c.due_at == booked_at)
        ).all()
    told = {(a.external_id, a.step_id) for a in alerts}
    # No email and no SMS consent: every critical step that applies reaches no one.
    assert {
        ("M0", s) for s in ("medicines", "escort", "day_before", "after_care", "next_day")
    } <= told
    assert ("M1", "escort") in told  # 22.5 hours ahead: too late to arrange an escort
    assert not {step for who, step in told if who == "M1"} - {"escort"}
    reasons = {a.alert for a in alerts if a.external_id == "M0" and a.step_id == "medicines"}
    assert reasons == {
        "medicines: a critical message reaches no one; please phone the patient "
        "(email: no email address; sms: no SMS consent)"
    }
