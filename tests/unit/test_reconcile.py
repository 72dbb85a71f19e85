from dataclasses import replace
from datetime import time, timedelta

from reminder_service.configuration.protocols import load_protocols
from reminder_service.domain.appointment import AppointmentStatus, Tristate
from reminder_service.domain.planning import ReminderStatus, plan_reminders
from reminder_service.domain.reconcile import ExistingReminder, reconcile
from reminder_service.domain.timing import SendWindow
from tests.factories import CONFIG_DIR, appointment, local

PROTOCOL = load_protocols(CONFIG_DIR / "protocols", lambda *_: [])[0]
WINDOW = SendWindow(time(8), time(20))
BOOKED_AT = local("Europe/London", 2026, 11, 19, 11, 0)


def stored(plans, statuses=None):  # type: ignore[no-untyped-def]
    statuses = statuses or {}
    return [
        ExistingReminder(
            i,
            p.step_id,
            p.channel,
            p.nominal_at,
            statuses.get((p.step_id, p.channel.value), p.status),
        )
        for i, p in enumerate(plans, start=1)
    ]


def test_same_plan_changes_nothing():
    plans = plan_reminders(appointment(), PROTOCOL, WINDOW, BOOKED_AT, BOOKED_AT)
    later = BOOKED_AT + timedelta(days=1)
    again = plan_reminders(appointment(), PROTOCOL, WINDOW, later, BOOKED_AT)
    result = reconcile(stored(plans), again)
    assert result.create == [] and result.cancel == []
    assert len(result.keep) == len(plans)


def test_reschedule_cancels_pending_keeps_sent_and_plans_the_new_times():
    plans = plan_reminders(appointment(), PROTOCOL, WINDOW, BOOKED_AT, BOOKED_AT)
    existing = stored(
        plans, {("booked", "sms"): ReminderStatus.SENT, ("booked", "email"): ReminderStatus.SENT}
    )
    moved = appointment(start=appointment().start + timedelta(days=7))
    now = BOOKED_AT + timedelta(days=2)
    result = reconcile(existing, plan_reminders(moved, PROTOCOL, WINDOW, now, now))
    sent_ids = {r.id for r in existing if r.status is ReminderStatus.SENT}
    assert not sent_ids & set(result.cancel)  # history is never touched
    pending = [r for r in existing if r.status is ReminderStatus.PENDING]
    assert set(result.cancel) == {r.id for r in pending}
    steps = {(p.step_id, p.channel.value) for p in result.create}
    assert ("booked", "sms") in steps  # a reschedule re-anchors the booking message
    assert ("day_before", "sms") in steps


def test_already_sent_message_for_the_same_moment_is_not_planned_again():
    plans = plan_reminders(appointment(), PROTOCOL, WINDOW, BOOKED_AT, BOOKED_AT)
    existing = stored(plans, {("medicines", "sms"): ReminderStatus.SENT})
    # A detail changes (the location) but not the time: nothing is re-sent or re-planned.
    changed = appointment(location="Treatment Room 4")
    now = BOOKED_AT + timedelta(days=15)
    result = reconcile(existing, plan_reminders(changed, PROTOCOL, WINDOW, now, BOOKED_AT))
    assert not any(p.step_id == "medicines" and p.channel.value == "sms" for p in result.create)


def test_cancellation_cancels_every_open_reminder_only():
    plans = plan_reminders(appointment(), PROTOCOL, WINDOW, BOOKED_AT, BOOKED_AT)
    existing = stored(plans, {("booked", "sms"): ReminderStatus.SENT})
    cancelled = appointment(status=AppointmentStatus.CANCELLED)
    result = reconcile(existing, plan_reminders(cancelled, PROTOCOL, WINDOW, BOOKED_AT, BOOKED_AT))
    assert result.create == []
    assert len(result.cancel) == len(existing) - 1


def test_flag_change_replaces_a_pending_with_a_skipped():
    plans = plan_reminders(appointment(), PROTOCOL, WINDOW, BOOKED_AT, BOOKED_AT)
    existing = stored(plans)
    no_sedation = appointment(sedation=Tristate.NO)
    result = reconcile(
        existing, plan_reminders(no_sedation, PROTOCOL, WINDOW, BOOKED_AT, BOOKED_AT)
    )
    escort_ids = {r.id for r in existing if r.step_id == "escort"}
    assert escort_ids <= set(result.cancel)
    assert {p.status for p in result.create if p.step_id == "escort"} == {ReminderStatus.SKIPPED}


def test_a_skip_decided_at_send_time_stands_while_the_plan_still_wants_that_message():
    plans = plan_reminders(appointment(), PROTOCOL, WINDOW, BOOKED_AT, BOOKED_AT)
    existing = stored(plans)
    booked_sms = next(r for r in existing if (r.step_id, r.channel.value) == ("booked", "sms"))
    capped = replace(booked_sms, status=ReminderStatus.SKIPPED, dispatched=True)
    existing = [capped if r is booked_sms else r for r in existing]
    later = BOOKED_AT + timedelta(hours=1)
    result = reconcile(existing, plan_reminders(appointment(), PROTOCOL, WINDOW, later, BOOKED_AT))
    assert result.create == [] and result.cancel == [] and capped.id in result.keep
    # Rescheduled: the plan no longer wants that moment, so the skip is cancelled like any.
    moved = appointment(start=local("Europe/London", 2026, 12, 17, 9, 30))
    result = reconcile(existing, plan_reminders(moved, PROTOCOL, WINDOW, later, later))
    assert capped.id in result.cancel
    assert ("booked", "sms") in {(p.step_id, p.channel.value) for p in result.create}
    # Skipped by planning (never dispatched): a plan that now wants it pending replaces it.
    existing = stored(plans, {("booked", "sms"): ReminderStatus.SKIPPED})
    result = reconcile(existing, plan_reminders(appointment(), PROTOCOL, WINDOW, later, BOOKED_AT))
    assert result.cancel == [booked_sms.id] and len(result.create) == 1
