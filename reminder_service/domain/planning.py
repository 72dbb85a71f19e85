"""Planning: appointment + protocol + send window + now -> the reminders it should have.

Pure and deterministic: the caller passes `now` and the moment the appointment time was set.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from .appointment import Appointment, AppointmentStatus
from .protocol import Channel, Condition, LatePolicy, Protocol, Step
from .timing import AnchorTimes, RelativeTime, SendWindow, resolve, zone


class ReminderStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Recipient(StrEnum):
    """Whom a reminder is for: the patient; their caregiver (a copy of the patient's SMS,
    planned as a row of its own so it is claimed, sent and audited like any other); or the
    clinic's staff (an alert by email that a message could not reach the patient)."""

    PATIENT = "patient"
    CAREGIVER = "caregiver"
    STAFF = "staff"


NO_SMS_CONSENT = "no SMS consent: email only"
CAREGIVER_NO_MOBILE = "caregiver copy: no mobile number for the caregiver"
CAREGIVER_NO_CONSENT = "caregiver copy: the caregiver has not consented to texts"
CAREGIVER_SAME_NUMBER = "caregiver copy: the caregiver's mobile is the patient's, texted once"
# The reason of a step skipped under the alert_staff late policy; importing raises the alert.
STAFF_ALERT_REASON = "booked too late for this step; staff alerted"


class PlannedReminder(NamedTuple):
    """Immutable; a NamedTuple because a large import builds over a million of them."""

    step_id: str
    channel: Channel
    template: str
    nominal_at: datetime  # the protocol's moment, before late-booking and send-window moves
    due_at: datetime  # when it should actually go out
    not_after: datetime | None
    status: ReminderStatus  # PENDING or SKIPPED
    reason: str
    recipient: Recipient = Recipient.PATIENT


def plan_reminders(
    appointment: Appointment,
    protocol: Protocol,
    window: SendWindow,
    now: datetime,
    scheduled_at: datetime,
) -> list[PlannedReminder]:
    """Every enabled step and channel of `protocol`, each pending or skipped with its reason."""
    return plan_window(appointment, protocol, window, now, scheduled_at).reminders


class PlanWindow(NamedTuple):
    reminders: list[PlannedReminder]  # those due in [since, until]
    # None: nothing of the plan is due after `until`. Otherwise a moment after `until` before
    # which nothing more is due (a lower bound, so planning from it again may find nothing yet).
    resume_at: datetime | None


def plan_window(
    appointment: Appointment,
    protocol: Protocol,
    window: SendWindow,
    now: datetime,
    scheduled_at: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
) -> PlanWindow:
    """The part of `plan_reminders(...)` due from `since` to `until` (inclusive; None is open).

    The same arguments always give the same plan, so consecutive windows of it add up to the
    whole: the store keeps only the reminders due soon, and extends them as time passes. Steps
    that cannot fall in the window are not resolved at all, which is what makes that cheap.
    """
    if appointment.status is AppointmentStatus.CANCELLED:
        return PlanWindow([], None)
    tz = zone(appointment.patient.timezone)
    anchors = AnchorTimes(booking=scheduled_at, start=appointment.start, end=appointment.end)
    planned: list[PlannedReminder] = []
    resume_at: datetime | None = None
    for step in protocol.steps:
        if not step.enabled:
            continue
        if until is not None:
            earliest = getattr(anchors, step.send_at.anchor) + step.send_at.earliest_shift
            if earliest > until:
                resume_at = earliest if resume_at is None else min(resume_at, earliest)
                continue
        size = len(planned)
        _plan_step(step, appointment, window, now, anchors, tz, planned)
        kept = []
        for reminder in planned[size:]:
            due = reminder.due_at
            if until is not None and due > until:
                resume_at = due if resume_at is None else min(resume_at, due)
            elif since is None or due >= since:  # else stored by an earlier window
                kept.append(reminder)
        planned[size:] = kept
    return PlanWindow(planned, resume_at)


def _plan_step(
    step: Step,
    appointment: Appointment,
    window: SendWindow,
    now: datetime,
    anchors: AnchorTimes,
    tz: ZoneInfo,
    planned: list[PlannedReminder],
) -> None:
    nominal = resolve(step.send_at, anchors, tz)
    not_after = resolve(step.not_after, anchors, tz) if step.not_after else None
    due, step_skip = _due_and_step_skip(step, appointment, window, now, anchors, tz, nominal)
    merge_sms = False
    if not step_skip and not_after is not None and due > not_after:
        # A critical step booked too late to send is a person's job: the staff are told (not
        # for an appointment already under way or past: that is history, not a booking).
        late = step.critical and nominal < now < anchors.start
        step_skip = STAFF_ALERT_REASON if late else _deadline_reason(nominal, now, not_after)
        # The window, not the clock, pushes it past its deadline: a step that says so merges
        # its SMS into the next text, so the SMS stays planned at its own moment and the
        # dispatcher decides the merge when it comes (consent, caps, opt-out still apply).
        merge_sms = step.too_late == "merge" and now <= nominal <= not_after
    caregiver = appointment.patient.known_caregiver
    for rule in step.channels:
        if merge_sms and rule.channel is _SMS:
            reason = _channel_skip(rule.channel, rule.condition, appointment)
            row_due = nominal
        else:
            reason = step_skip or _channel_skip(rule.channel, rule.condition, appointment)
            row_due = due
        planned.append(_planned(step, rule.channel, nominal, row_due, not_after, reason))
        if rule.channel is _SMS and caregiver is not None and caregiver.copies:
            # The patient chose copies: the caregiver's copy of this text, planned like the
            # patient's own, or skipped with the reason it cannot go.
            if merge_sms:
                reason = _caregiver_skip(rule.condition, appointment)
            else:
                reason = step_skip or _caregiver_skip(rule.condition, appointment)
            planned.append(
                _planned(step, rule.channel, nominal, row_due, not_after, reason, _CAREGIVER)
            )


def _planned(
    step: Step,
    channel: Channel,
    nominal: datetime,
    due: datetime,
    not_after: datetime | None,
    reason: str,
    recipient: Recipient = Recipient.PATIENT,
) -> PlannedReminder:
    """One channel of a step, for one recipient: pending, or skipped with `reason`."""
    return PlannedReminder(
        step.id,
        channel,
        step.template,
        nominal,
        due,
        not_after,
        _SKIPPED if reason else _PENDING,
        reason or _planned_reason(step.send_at),
        recipient,
    )


# Module constants: an Enum member lookup through the class costs a descriptor call each time,
# and planning a large import makes millions of them.
_PENDING = ReminderStatus.PENDING
_SKIPPED = ReminderStatus.SKIPPED
_SMS = Channel.SMS
_EMAIL = Channel.EMAIL
_CAREGIVER = Recipient.CAREGIVER


@lru_cache(maxsize=256)
def _planned_reason(moment: RelativeTime) -> str:
    return f"planned: {moment.describe()}"


@lru_cache(maxsize=256)
def _condition_reason(condition: Condition) -> str:
    return f"condition not met: {condition.describe()}"


@lru_cache(maxsize=256)
def _channel_condition_reason(channel: Channel, condition: Condition) -> str:
    return f"{channel.value} only when {condition.describe()}"


def _due_and_step_skip(
    step: Step,
    appointment: Appointment,
    window: SendWindow,
    now: datetime,
    anchors: AnchorTimes,
    tz: ZoneInfo,
    nominal: datetime,
) -> tuple[datetime, str]:
    if not step.condition.holds(appointment):
        return nominal, _condition_reason(step.condition)
    if step.min_notice is not None and anchors.start - anchors.booking < step.min_notice:
        return nominal, f"booked less than {_span(step.min_notice)} ahead"
    due = nominal
    if nominal < now:
        critical = step.critical and now < anchors.start  # never skipped unseen
        if step.late is LatePolicy.SKIP and not critical:
            return nominal, "booked too late for this step"
        if step.late is not LatePolicy.CATCH_UP:
            return nominal, STAFF_ALERT_REASON
        due = now
    return window.next_allowed(due, tz), ""


def _deadline_reason(nominal: datetime, now: datetime, not_after: datetime) -> str:
    if now > not_after:
        return "deadline passed"
    if nominal > not_after:
        return "send time is after its deadline"
    return "the send window opens after its deadline"


def _channel_skip(channel: Channel, condition: Condition, appointment: Appointment) -> str:
    patient = appointment.patient
    if patient.deceased or patient.do_not_contact:
        return patient.suppressed
    if condition.requirements and not condition.holds(appointment):
        return _channel_condition_reason(channel, condition)
    if channel is _SMS and not patient.mobile:
        return "no mobile number"
    if channel is _SMS and not patient.sms_consent:
        return NO_SMS_CONSENT
    if channel is _EMAIL and not appointment.patient.email:
        return "no email address"
    return ""


def _caregiver_skip(condition: Condition, appointment: Appointment) -> str:
    """Why the caregiver's copy of an SMS cannot go, or "". The patient's own reasons (no mobile,
    no consent) are the patient's: the caregiver's copy goes without them."""
    patient = appointment.patient
    if patient.deceased or patient.do_not_contact:
        return patient.suppressed
    if condition.requirements and not condition.holds(appointment):
        return _channel_condition_reason(_SMS, condition)
    return caregiver_skip(appointment)


def caregiver_skip(appointment: Appointment) -> str:
    """Why the caregiver's copies cannot go to them, or "" (the patient chose copies)."""
    patient = appointment.patient
    caregiver = patient.known_caregiver
    if caregiver is None or not caregiver.copies:
        return "caregiver copy: the patient has no caregiver getting copies now"
    if caregiver.mobile is None:
        return CAREGIVER_NO_MOBILE
    if not caregiver.sms_consent:
        return CAREGIVER_NO_CONSENT
    if caregiver.mobile == patient.mobile:
        return CAREGIVER_SAME_NUMBER
    return ""


def _span(delta: timedelta) -> str:
    days, seconds = delta.days, delta.seconds
    if seconds == 0:
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{delta.total_seconds() / 3600:g} hours"
