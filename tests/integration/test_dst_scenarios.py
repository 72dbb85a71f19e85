"""Scenario runs with a moved clock across the DST weeks of three zones: every message lands
inside the send window, at its wall-clock time, never after its deadline, within the SMS caps.

The clock jumps as the running service's timer would wake: to each next due time, and at least
every six hours (so the planning horizon keeps being extended)."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import Tristate
from reminder_service.domain.timing import zone
from reminder_service.store.tables import reminders
from tests.factories import appointment, local, patient, walk_clock

# (zone, the appointment's local start just after a transition, what the transition is)
SCENARIOS = [
    ("America/New_York", (2027, 3, 15, 9, 30), "spring forward, Sun 14 Mar"),
    ("America/New_York", (2026, 11, 2, 9, 30), "fall back, Sun 1 Nov"),
    ("Europe/London", (2027, 3, 29, 9, 30), "spring forward, Sun 28 Mar"),
    ("Europe/London", (2026, 10, 26, 9, 30), "fall back, Sun 25 Oct"),
    ("Australia/Sydney", (2027, 4, 5, 9, 30), "fall back, Sun 4 Apr"),
    ("Australia/Sydney", (2026, 10, 5, 9, 30), "spring forward, Sun 4 Oct"),
]
AT_TIMES = {"medicines": time(10), "escort": time(10), "day_before": time(18), "next_day": time(10)}


def sent(service: Service) -> list[Any]:
    with service.engine.connect() as conn:
        return list(
            conn.execute(select(reminders).where(reminders.c.status == "sent")).mappings().all()
        )


@pytest.mark.parametrize(
    ("tz", "start", "transition"), SCENARIOS, ids=[s[2] + " " + s[0] for s in SCENARIOS]
)
def test_every_message_at_its_local_time_inside_the_window(
    service, clock, tz, start, transition
) -> None:  # type: ignore[no-untyped-def]
    appt = appointment(start=local(tz, *start), patient=patient(timezone=tz))
    clock.now = appt.start - timedelta(days=12)  # booked well ahead, at some hour of the day
    service.importer.apply([(2, appt)], source="t", label="t")
    walk_clock(service, clock, appt.start + timedelta(days=4))
    messages = sent(service)
    assert {m["step_id"] for m in messages} >= {"booked", "medicines", "escort", "day_before",
                                                 "after_care", "next_day"}  # fmt: skip
    for message in messages:
        local_time = message["sent_at"].astimezone(zone(tz))
        assert time(8) <= local_time.time() < time(20), (message["step_id"], local_time)
        if message["step_id"] in AT_TIMES:
            assert local_time.time() == AT_TIMES[message["step_id"]], (
                message["step_id"],
                local_time,
            )
        if message["not_after"] is not None:
            assert message["sent_at"] <= message["not_after"]
        assert message["sent_at"] == message["due_at"]  # on time, not late
    # Within the SMS caps as far as standard texts can make room: 1 a day, and a 7-day window
    # holds more than 3 only when every text in it is critical (never capped away).
    critical = {s.id for s in service.catalog.protocol("bone_marrow_biopsy").steps if s.critical}
    texts = sorted((m["sent_at"], m["step_id"]) for m in messages if m["channel"] == "sms")
    days = [t.astimezone(zone(tz)).date() for t, _ in texts]
    assert len(days) == len(set(days))
    for t, _ in texts:
        week = [step for u, step in texts if t - timedelta(days=7) < u <= t]
        assert len(week) <= 3 or set(week) <= critical, week
    with service.engine.connect() as conn:
        escort = dict(
            conn.execute(
                select(reminders.c.channel, reminders.c.reason).where(
                    reminders.c.step_id == "escort"
                )
            ).all()
        )
    # The escort advice is critical: it went by text too, though that week was over the cap.
    assert escort == {"sms": "critical: sent although over the SMS cap (1 a day, 3 in 7 days)",
                      "email": "sent"}  # fmt: skip


def test_a_patient_in_another_zone_gets_their_own_local_times(service, clock) -> None:  # type: ignore[no-untyped-def]
    # The clinic is in London; this patient is in New York for the week of its fall-back.
    appt = appointment(start=local("America/New_York", 2026, 11, 2, 9, 30),
                       patient=patient(timezone="America/New_York"))  # fmt: skip
    clock.now = appt.start - timedelta(days=12)
    service.importer.apply([(2, appt)], source="t", label="t")
    walk_clock(service, clock, appt.start + timedelta(days=4))
    by_step = {m["step_id"]: m["sent_at"] for m in sent(service) if m["channel"] == "sms"}
    new_york, london = zone("America/New_York"), zone("Europe/London")
    assert by_step["day_before"].astimezone(new_york).time() == time(18)
    assert by_step["day_before"].astimezone(london).time() == time(23)  # not London's 18:00


def test_the_caps_weigh_every_appointment_of_the_patient(service, clock) -> None:  # type: ignore[no-untyped-def]
    """A biopsy, and three days later a second appointment for the same patient: one allowance
    of texts for both. No text may give way to the caps while a less important one (lower
    `sms_priority`) went in the same week: judged per appointment, the second appointment's
    texts used the slots the first one's warning signs needed."""
    first = appointment(external_id="A1")
    second = appointment(
        external_id="A2",
        start=first.start + timedelta(days=3),
        sedation=Tristate.NO,
        anticoagulant=Tristate.NO,
    )
    service.importer.apply([(2, first), (3, second)], source="t", label="t")
    forecast = {
        (external_id, line.step)
        for external_id in ("A1", "A2")
        for line in service.previewer().preview(external_id).lines
        if line.channel == "sms" and "give way to the SMS caps" in line.reason
    }
    walk_clock(service, clock, second.start + timedelta(days=4))
    protocol = service.catalog.protocol_or_none("bone_marrow_biopsy")
    assert protocol is not None
    with service.engine.connect() as conn:
        rows = conn.execute(
            select(reminders.c.step_id, reminders.c.status, reminders.c.reason)
            .add_columns(reminders.c.due_at, reminders.c.sent_at, reminders.c.appointment_id)
            .where(reminders.c.channel == "sms")
        ).all()
    sent = [r for r in rows if r.status == "sent"]
    capped = [r for r in rows if r.reason.startswith("over the SMS cap")]
    critical = {step.id for step in protocol.steps if step.critical}
    texts = sorted((r.sent_at, r.step_id) for r in sent)
    days = [t.astimezone(zone("Europe/London")).date() for t, _ in texts]
    assert len(days) == len(set(days))  # 1 a day, across both appointments
    for t, _ in texts:  # over 3 in 7 days only with critical texts, never capped away
        week = [step for u, step in texts if t - timedelta(days=7) < u <= t]
        assert len(week) <= 3 or set(week) <= critical, week
    # Both bookings were texted the same day: one gave way (equals in priority and time, in an
    # order fixed by their keys), its line merged into that
    # appointment's next text. No critical text ever gives way.
    assert len(sent) == 9
    assert [(r.appointment_id, r.step_id) for r in capped] == [(1, "booked")]
    assert capped[0].reason.endswith("merged into the next text")
    assert not {r.step_id for r in capped} & critical
    # Preview foresaw exactly that, deciding as the dispatcher does, across both appointments.
    ids = {"A1": min(r.appointment_id for r in rows), "A2": max(r.appointment_id for r in rows)}
    assert {(ids[a], step) for a, step in forecast} == {
        (r.appointment_id, r.step_id) for r in capped
    }
