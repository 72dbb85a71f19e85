"""The default biopsy protocol planned for realistic appointments (docs/SOURCES.md)."""

from dataclasses import replace
from datetime import time, timedelta

import pytest

from reminder_service.configuration.protocols import load_protocols
from reminder_service.domain.appointment import AppointmentStatus, Tristate
from reminder_service.domain.planning import (
    STAFF_ALERT_REASON,
    PlannedReminder,
    ReminderStatus,
    plan_reminders,
    plan_window,
)
from reminder_service.domain.timing import SendWindow, parse_relative_time, zone
from tests.factories import CONFIG_DIR, appointment, local, patient

PROTOCOL = load_protocols(CONFIG_DIR / "protocols", lambda *_: [])[0]
WINDOW = SendWindow(time(8), time(20))
LONDON = zone("Europe/London")


def plan(appt, now, scheduled_at=None):  # type: ignore[no-untyped-def]
    return plan_reminders(appt, PROTOCOL, WINDOW, now, scheduled_at or now)


def by_key(plans: list[PlannedReminder]) -> dict[tuple[str, str], PlannedReminder]:
    return {(p.step_id, p.channel.value): p for p in plans}


def london(p: PlannedReminder) -> str:
    return p.due_at.astimezone(LONDON).strftime("%a %d %b %H:%M")


def test_booked_three_weeks_ahead_gets_every_enabled_step_at_its_local_time():
    now = local("Europe/London", 2026, 11, 19, 11, 0)
    plans = by_key(plan(appointment(), now))  # Thu 10 Dec 09:30, sedation yes, anticoagulant yes
    expected = {
        ("booked", "sms"): "Thu 19 Nov 11:00",
        ("booked", "email"): "Thu 19 Nov 11:00",
        ("medicines", "email"): "Thu 03 Dec 10:00",
        ("medicines", "sms"): "Thu 03 Dec 10:00",
        ("escort", "email"): "Tue 08 Dec 10:00",
        ("escort", "sms"): "Tue 08 Dec 10:00",
        ("day_before", "sms"): "Wed 09 Dec 18:00",
        ("day_before", "email"): "Wed 09 Dec 18:00",
        ("after_care", "sms"): "Thu 10 Dec 12:30",
        ("after_care", "email"): "Thu 10 Dec 12:30",
        ("next_day", "sms"): "Fri 11 Dec 10:00",
        ("next_day", "email"): "Fri 11 Dec 10:00",
        ("check_in", "email"): "Sun 13 Dec 10:00",
    }
    assert {k: london(v) for k, v in plans.items()} == expected
    assert all(p.status is ReminderStatus.PENDING for p in plans.values())
    # Disabled steps (morning_of, results_safety_net) are not planned at all.
    assert not {"morning_of", "results_safety_net"} & {k[0] for k in plans}


def test_pre_procedure_steps_never_go_out_after_the_start():
    now = local("Europe/London", 2026, 11, 19, 11, 0)
    plans = plan(appointment(), now)
    start = appointment().start
    for p in plans:
        if p.step_id in {"booked", "medicines", "escort", "day_before"}:
            assert p.not_after is not None and p.not_after <= start


def test_conditions_skip_with_reasons():
    now = local("Europe/London", 2026, 11, 19, 11, 0)
    appt = appointment(sedation=Tristate.NO, anticoagulant=Tristate.NO)
    plans = by_key(plan(appt, now))
    assert plans[("escort", "sms")].status is ReminderStatus.SKIPPED
    assert plans[("escort", "sms")].reason == "condition not met: sedation is unknown or yes"
    assert plans[("medicines", "sms")].status is ReminderStatus.SKIPPED
    assert plans[("medicines", "sms")].reason == "sms only when anticoagulant is unknown or yes"
    assert plans[("medicines", "email")].status is ReminderStatus.PENDING


def test_unknown_anticoagulant_counts_as_yes_and_unknown_sedation_gets_escort_advice():
    now = local("Europe/London", 2026, 11, 19, 11, 0)
    appt = appointment(sedation=Tristate.UNKNOWN, anticoagulant=Tristate.UNKNOWN)
    plans = by_key(plan(appt, now))
    assert plans[("medicines", "sms")].status is ReminderStatus.PENDING
    assert plans[("escort", "sms")].status is ReminderStatus.PENDING


def test_late_booking_catches_up_medicines_and_alerts_staff_for_the_escort():
    # Booked at 11:00 on Wed 9 Dec for Thu 10 Dec 09:30: 22.5 hours ahead.
    now = local("Europe/London", 2026, 12, 9, 11, 0)
    plans = by_key(plan(appointment(), now))
    assert plans[("medicines", "sms")].status is ReminderStatus.PENDING
    assert plans[("medicines", "sms")].due_at == now  # catch up: send now
    assert plans[("escort", "sms")].status is ReminderStatus.SKIPPED
    # Escort advice is critical: too late to send it, the clinic's staff are told at import.
    assert plans[("escort", "sms")].reason == STAFF_ALERT_REASON
    assert plans[("booked", "sms")].reason == "booked less than 2 days ahead"
    assert london(plans[("day_before", "sms")]) == "Wed 09 Dec 18:00"


def test_catch_up_in_the_evening_waits_for_the_send_window_but_not_past_the_start():
    # Booked at 21:30 for 09:30 next morning: the catch-up would be 08:00, before the start.
    now = local("Europe/London", 2026, 12, 9, 21, 30)
    plans = by_key(plan(appointment(), now))
    assert london(plans[("day_before", "sms")]) == "Thu 10 Dec 08:00"
    # Booked at 21:30 for 07:30 next morning: 08:00 is after the start, so it is skipped.
    early = appointment(start=local("Europe/London", 2026, 12, 10, 7, 30))
    plans = by_key(plan(early, now))
    assert plans[("day_before", "sms")].status is ReminderStatus.SKIPPED
    # The day-before text is critical: the send window keeps it from going, so staff are told.
    assert plans[("day_before", "sms")].reason == STAFF_ALERT_REASON


def test_after_care_for_a_late_procedure_moves_to_next_morning():
    appt = appointment(start=local("Europe/London", 2026, 12, 10, 17, 30))  # ends 18:30, +2 h
    plans = by_key(plan(appt, local("Europe/London", 2026, 11, 19, 11, 0)))
    assert london(plans[("after_care", "sms")]) == "Fri 11 Dec 08:00"
    assert plans[("after_care", "sms")].nominal_at == local("Europe/London", 2026, 12, 10, 20, 30)


def test_past_appointment_in_an_export_gets_nothing_stale():
    now = local("Europe/London", 2026, 12, 20, 11, 0)  # ten days after the procedure
    plans = plan(appointment(), now)
    assert plans and all(p.status is ReminderStatus.SKIPPED for p in plans)


def test_missing_contacts_skip_the_channel():
    appt = appointment(patient=patient(mobile=None))
    plans = by_key(plan(appt, local("Europe/London", 2026, 11, 19, 11, 0)))
    assert plans[("day_before", "sms")].reason == "no mobile number"
    assert plans[("day_before", "email")].status is ReminderStatus.PENDING


def test_cancelled_appointment_plans_nothing():
    appt = appointment(status=AppointmentStatus.CANCELLED)
    assert plan(appt, local("Europe/London", 2026, 11, 19, 11, 0)) == []


@pytest.mark.parametrize(
    ("zone_name", "expected_utc_hour"), [("America/New_York", 23), ("Europe/London", 18)]
)
def test_patient_zone_decides_local_times(zone_name, expected_utc_hour):  # type: ignore[no-untyped-def]
    appt = appointment(
        patient=patient(timezone=zone_name), start=local(zone_name, 2026, 12, 10, 9, 30)
    )
    plans = by_key(plan(appt, local(zone_name, 2026, 11, 19, 11, 0)))
    assert plans[("day_before", "sms")].due_at.hour == expected_utc_hour


def test_plan_is_deterministic():
    now = local("Europe/London", 2026, 11, 19, 11, 0)
    assert plan(appointment(), now) == plan(appointment(), now)
    later = replace(appointment(), start=appointment().start + timedelta(days=1))
    assert plan(later, now) != plan(appointment(), now)


# --- Windows of a plan (the planning horizon) -------------------------------------------------

WINDOW_CASES = [
    # (zone, start local, booked at local): far ahead, across both DST changes, booked late.
    ("Europe/London", (2026, 12, 10, 9, 30), (2026, 11, 19, 11, 0)),
    ("Europe/London", (2027, 3, 29, 8, 0), (2027, 3, 1, 9, 0)),  # the day after spring forward
    ("America/New_York", (2026, 11, 2, 9, 0), (2026, 10, 20, 12, 0)),  # the day after fall back
    ("America/New_York", (2027, 3, 15, 16, 45), (2027, 3, 13, 19, 30)),
    ("Australia/Sydney", (2027, 4, 5, 10, 15), (2027, 3, 20, 9, 0)),
    ("Europe/London", (2026, 12, 10, 9, 30), (2026, 12, 9, 21, 0)),  # booked the evening before
]


@pytest.mark.parametrize(("tz", "start", "booked"), WINDOW_CASES)
@pytest.mark.parametrize("step_hours", [1, 5, 24])
def test_consecutive_windows_add_up_to_exactly_the_whole_plan(tz, start, booked, step_hours):  # type: ignore[no-untyped-def]
    horizon = timedelta(hours=48)
    appt = appointment(
        start=local(tz, *start), patient=patient(timezone=tz), sedation=Tristate.UNKNOWN
    )
    now = local(tz, *booked)
    whole = plan(appt, now)
    first = plan_window(appt, PROTOCOL, WINDOW, now, now, until=now + horizon)
    stored, resume, clock = list(first.reminders), first.resume_at, now
    while resume is not None:
        # Nothing is due between the end of one window and where the plan says it resumes.
        assert resume > clock + horizon
        assert all(p.due_at >= resume for p in whole if p not in stored)
        clock += timedelta(hours=step_hours)
        until = clock + horizon
        window = plan_window(appt, PROTOCOL, WINDOW, now, now, since=resume, until=until)
        assert all(resume <= p.due_at <= until for p in window.reminders)
        stored.extend(window.reminders)
        resume = window.resume_at
    assert sorted(stored) == sorted(whole)  # each reminder once, identical in every field


def test_a_window_resolves_only_steps_that_can_fall_in_it():
    now = local("Europe/London", 2026, 11, 19, 11, 0)
    window = plan_window(appointment(), PROTOCOL, WINDOW, now, now, until=now + timedelta(hours=48))
    assert {(p.step_id, p.channel.value) for p in window.reminders} == {
        ("booked", "sms"),
        ("booked", "email"),
    }
    # It resumes no later than the first step left out (medicines, Thu 3 Dec 10:00).
    medicines = by_key(plan(appointment(), now))[("medicines", "sms")].due_at
    assert window.resume_at is not None
    assert now + timedelta(hours=48) < window.resume_at <= medicines


def test_a_cancelled_appointment_has_no_window_and_nothing_to_resume():
    now = local("Europe/London", 2026, 11, 19, 11, 0)
    cancelled = appointment(status=AppointmentStatus.CANCELLED)
    assert plan_window(cancelled, PROTOCOL, WINDOW, now, now, until=now) == ([], None)


def test_a_step_that_merges_keeps_its_sms_for_the_dispatcher_when_the_window_makes_it_late():
    late_evening = replace(
        PROTOCOL.step("escort"),
        send_at=parse_relative_time("2 days before start at 21:00"),
        not_after=parse_relative_time("36 hours before start"),
    )
    now = local("Europe/London", 2026, 11, 19, 11, 0)
    for too_late, sms_status in (
        ("skip", ReminderStatus.SKIPPED),
        ("merge", ReminderStatus.PENDING),
    ):
        protocol = replace(PROTOCOL, steps=(replace(late_evening, too_late=too_late),))
        plans = by_key(plan_reminders(appointment(), protocol, WINDOW, now, now))
        assert plans[("escort", "sms")].status is sms_status
        assert plans[("escort", "email")].status is ReminderStatus.SKIPPED
        assert plans[("escort", "email")].reason == "the send window opens after its deadline"
    assert london(plans[("escort", "sms")]) == "Tue 08 Dec 21:00"  # at its own moment
