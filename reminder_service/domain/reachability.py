"""Which critical steps of a plan can reach no one, known the moment the appointment arrives.

Pure. A critical step (see `Priority`) must reach the patient by some channel. When none of its
channels can (no mobile, no SMS consent, an opted-out number, no email address), the clinic's
staff must hear of it at once, while there is still time to phone the patient; not on the day
the message was due. A patient marked deceased or do-not-contact is left alone: that is a
decision, not a gap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .appointment import Appointment
from .planning import STAFF_ALERT_REASON, PlannedReminder, Recipient
from .protocol import Channel, Protocol, Step

CRITICAL_UNREACHABLE = "a critical message reaches no one; please phone the patient"


def unreachable_critical_steps(
    appointment: Appointment, protocol: Protocol, scheduled_at: datetime, opted_out: bool
) -> list[tuple[str, str]]:
    """(step id, why) for each enabled critical step that applies to this appointment (booked,
    or moved, at `scheduled_at`) and that no channel can deliver."""
    patient = appointment.patient
    if patient.suppressed:
        return []
    blocked = []
    for step in protocol.steps:
        if not critical_for(step, appointment):
            continue
        if step.min_notice is not None and appointment.start - scheduled_at < step.min_notice:
            continue
        why = _why_unreachable(step, appointment, opted_out)
        if why:
            blocked.append((step.id, why))
    return blocked


def critical_for(step: Step, appointment: Appointment) -> bool:
    """Whether the step is critical for this patient: enabled, critical, meant for them, and
    not one whose text the protocol keeps for some patients only (the blood-thinner text goes
    to those on blood thinners, or unknown): for the others its email is general advice, and
    an alert for each of them would bury the ones that matter."""
    if not (step.enabled and step.critical and step.condition.holds(appointment)):
        return False
    return all(
        not rule.condition.requirements or rule.condition.holds(appointment)
        for rule in step.channels
    )


def _why_unreachable(step: Step, appointment: Appointment, opted_out: bool) -> str:
    """Why no channel of the step reaches the patient, or "" when one does."""
    patient = appointment.patient
    wanted = [r.channel for r in step.channels if r.condition.holds(appointment)]
    if not wanted:
        return ""  # the protocol sends this step to nobody like this patient
    if Channel.SMS in wanted and step.email_fallback and Channel.EMAIL not in wanted:
        wanted.append(Channel.EMAIL)  # the fallback email reaches them if the text cannot
    reasons = []
    for channel in wanted:
        if channel is Channel.SMS:
            if not patient.mobile:
                reasons.append("sms: no mobile number")
            elif not patient.sms_consent:
                reasons.append("sms: no SMS consent")
            elif opted_out:
                reasons.append("sms: the number has opted out")
            else:
                return ""
        elif not patient.email:
            reasons.append("email: no email address")
        else:
            return ""
    return "; ".join(reasons)


@dataclass(frozen=True, slots=True)
class UnreachableStep:
    """A step that will not reach the patient in time, for the clinic's staff to act on: a
    critical step no channel can deliver (`channel` None: any), or a step planned too late under
    the alert_staff policy (on `channel`)."""

    step: str
    channel: Channel | None
    why: str

    @property
    def reason(self) -> str:
        """As the audit trail records it: "step/channel: why"."""
        channel = self.channel.value if self.channel is not None else "any"
        return f"{self.step}/{channel}: {self.why}"

    @property
    def alert(self) -> str:
        """As the staff's alert says it (one per step): "step: why"."""
        return f"{self.step}: {self.why}"


def unreachable_steps(
    appointment: Appointment, protocol: Protocol, scheduled_at: datetime, opted_out: bool
) -> tuple[UnreachableStep, ...]:
    """`unreachable_critical_steps` as the alerts they raise."""
    return tuple(
        UnreachableStep(step, None, f"{CRITICAL_UNREACHABLE} ({why})")
        for step, why in unreachable_critical_steps(appointment, protocol, scheduled_at, opted_out)
    )


class UnreachableMemo:
    """`unreachable_steps`, remembered by everything it reads: the protocol, the appointment's
    flags (all a condition can ask about), whether the patient is suppressed, has a mobile, SMS
    consent and an email, the opt-out, and which steps' minimum notice the booking gives. A large
    import asks it about every appointment, and a few hundred answers cover them all."""

    def __init__(self) -> None:
        self._found: dict[tuple[object, ...], tuple[UnreachableStep, ...]] = {}
        self._notices: dict[str, tuple[timedelta, ...]] = {}

    def __call__(
        self, appointment: Appointment, protocol: Protocol, scheduled_at: datetime, opted_out: bool
    ) -> tuple[UnreachableStep, ...]:
        notices = self._notices.get(protocol.id)
        if notices is None:
            notices = self._notices[protocol.id] = tuple(
                {s.min_notice for s in protocol.steps if s.min_notice is not None}
            )
        patient = appointment.patient
        ahead = appointment.start - scheduled_at
        key = (
            protocol.id, appointment.sedation, appointment.anticoagulant,
            appointment.on_chemotherapy, appointment.diabetes_on_medication, patient.deceased,
            patient.do_not_contact, not patient.mobile, not patient.sms_consent,
            not patient.email, opted_out, *(ahead < notice for notice in notices),
        )  # fmt: skip
        found = self._found.get(key)
        if found is None:
            found = unreachable_steps(appointment, protocol, scheduled_at, opted_out)
            self._found[key] = found
        return found


def too_late_steps(planned: Iterable[PlannedReminder]) -> tuple[UnreachableStep, ...]:
    """The patient's reminders skipped because they were booked too late for a critical step:
    the staff are told. A caregiver's copies raise no alerts of their own."""
    return tuple(
        UnreachableStep(p.step_id, p.channel, p.reason)
        for p in planned
        if p.reason == STAFF_ALERT_REASON and p.recipient is Recipient.PATIENT
    )
