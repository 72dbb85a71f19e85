"""Send time: whether a claimed reminder goes now, and to whom; or why not.

Pure: the caller gathers what the rules weigh (the clinic, the step, the opt-outs, the patient's
texts under the SMS caps) and passes the time. The dispatcher acts on the decision; preview asks
the same question of the texts still to come, so what it foresees is what dispatch does.

The checks, in order: the clinic is known; a staff alert goes to the clinic's staff address; the
appointment is not cancelled and the patient may be contacted; attempts are left; the deadline
has not passed; the send window is open (else wait for it, unless that is too late); the
recipient can be reached on this channel and has not opted out; the SMS caps let it go.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from .appointment import AppointmentStatus
from .clinic import Clinic
from .planning import NO_SMS_CONSENT, Recipient, caregiver_skip
from .protocol import Channel, Step
from .reminder import Reminder, StoredAppointment, text_of
from .sms_caps import Text
from .sms_decision import Fallbacks, SmsOutcome
from .sms_decision import decide as decide_caps
from .timing import zone

CANCELLED_TEMPLATE = "cancelled"  # the message telling the patient of the cancellation
DEFERRED = "deferred to the send window"
DEADLINE_PASSED = "deadline passed before it could be sent"
TOO_LATE = "deadline passes before the send window opens"
SMS_OPTED_OUT = "the number has opted out of SMS"
EMAIL_UNSUBSCRIBED = "the address has unsubscribed from email"


@dataclass(frozen=True, slots=True)
class PatientCaps:
    """What the SMS caps weigh for one text: the patient's other texts (sent lately, or to
    come, of every appointment they have booked) and where it can go if it gives way."""

    others: Sequence[Text]
    fallbacks: Fallbacks


@dataclass(frozen=True, slots=True)
class Circumstances:
    """What the send-time rules weigh besides the reminder, its appointment and the time."""

    clinic: Clinic | None
    step: Step | None  # None: the protocol or the step is no longer configured
    max_attempts: int
    sms_opted_out: Collection[str] = frozenset()  # numbers
    email_unsubscribed: Collection[str] = frozenset()  # addresses, as the patient's is stored
    caps: PatientCaps | None = None  # None: no caps apply (or none are weighed)


@dataclass(frozen=True, slots=True)
class Send:
    to: str  # the number or address (a staff alert: the clinic's staff address)
    note: str = ""  # why it goes although the caps are full (a critical text)
    caps: SmsOutcome | None = None  # SEND: the caps let it go (it counts for the next texts)


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str
    undeliverable: bool = False  # it will not reach them this way: try another, or tell staff
    caps: SmsOutcome | None = None  # BY_EMAIL or ALERT_STAFF: the caps turned it away


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str


@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime  # when the send window opens; not an attempt
    reason: str = DEFERRED


@dataclass(frozen=True, slots=True)
class Merge:
    """Skipped, its line to ride on the appointment's next text to the same recipient."""

    reason: str
    caps: SmsOutcome | None = None  # MERGE: the caps merged it (a later text may carry it)


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str
    undeliverable: bool = False


Decision = Send | Skip | Cancel | Defer | Merge | Fail


def decide(
    reminder: Reminder, stored: StoredAppointment, now: datetime, given: Circumstances
) -> Decision:
    """What becomes of `reminder` if it is sent at `now`."""
    appointment = stored.appointment
    patient = appointment.patient
    clinic, step = given.clinic, given.step
    not_after = reminder.not_after
    if clinic is None:
        return Fail(f"unknown clinic {appointment.clinic_id!r}")
    if reminder.recipient is Recipient.STAFF:
        return (
            Send(clinic.staff_email)
            if clinic.staff_email
            else Fail("the clinic has no staff_email")
        )
    if (
        appointment.status is AppointmentStatus.CANCELLED
        and reminder.template != CANCELLED_TEMPLATE
    ):
        return Cancel("appointment cancelled")
    if patient.suppressed:
        return Skip(patient.suppressed)
    if reminder.attempts > given.max_attempts:
        return Fail(f"gave up after {given.max_attempts} attempts", undeliverable=True)
    if not_after is not None and now > not_after:
        # A critical message that missed its moment needs a person: follow-ups tell staff.
        return Skip(DEADLINE_PASSED, undeliverable=step is not None and step.critical)
    opens = clinic.send_window.next_allowed_now(now, zone(patient.timezone))
    if opens > now:
        if not_after is not None and opens > not_after:
            if reminder.channel is Channel.SMS and step is not None and step.too_late == "merge":
                return Merge(f"{TOO_LATE}: merged into the next text")
            return Skip(TOO_LATE)
        return Defer(opens)
    sms = reminder.channel is Channel.SMS
    copy = reminder.recipient is Recipient.CAREGIVER
    if copy:
        # The caregiver's copy: both consents are checked again now (an import may have
        # changed them since planning), and the caps stay the patient's own.
        why = caregiver_skip(appointment)
        if why:
            return Skip(why)
        to = patient.caregiver_copy_to
    else:
        to = patient.mobile if sms else patient.email
    if not to:
        return Skip(f"no {'mobile number' if sms else 'email address'}")
    if sms and not copy and not patient.sms_consent:
        return Skip(NO_SMS_CONSENT, undeliverable=True)
    if sms and to in given.sms_opted_out:
        return Skip(SMS_OPTED_OUT, undeliverable=True)
    if reminder.channel is Channel.EMAIL and to in given.email_unsubscribed:
        return Skip(EMAIL_UNSUBSCRIBED, undeliverable=True)
    if sms and not copy and given.caps is not None:
        return _under_caps(reminder, stored, now, given.caps, clinic, step, to)
    return Send(to)


def _under_caps(
    reminder: Reminder,
    stored: StoredAppointment,
    now: datetime,
    caps: PatientCaps,
    clinic: Clinic,
    step: Step | None,
    to: str,
) -> Decision:
    """What the SMS caps make of this text: sent, merged, by email, or nobody's (staff are
    told); decided over what this patient was sent and the texts still to come of every
    appointment they have booked."""
    this = text_of(step, stored.id, reminder.step_id, reminder.nominal_at, now)
    tz = zone(stored.appointment.patient.timezone)
    texts = [*caps.others, this]
    decision = decide_caps(texts, clinic.sms_caps, tz, {this.key: caps.fallbacks})[this.key]
    if decision.outcome is SmsOutcome.SEND:
        return Send(to, decision.reason, decision.outcome)
    if decision.outcome is SmsOutcome.MERGE:
        return Merge(decision.reason, decision.outcome)
    return Skip(decision.reason, undeliverable=True, caps=decision.outcome)  # by email, or staff
