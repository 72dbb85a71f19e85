"""Send time: every branch of `domain.sending.decide`, the rules dispatch and preview share."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta
from typing import Any

import pytest

from reminder_service.domain import timing
from reminder_service.domain.appointment import AppointmentStatus, Caregiver
from reminder_service.domain.clinic import Clinic
from reminder_service.domain.planning import (
    CAREGIVER_NO_CONSENT,
    NO_SMS_CONSENT,
    Recipient,
    ReminderStatus,
)
from reminder_service.domain.protocol import Channel, ChannelRule, Priority, Step
from reminder_service.domain.reminder import Reminder, StoredAppointment, text_of
from reminder_service.domain.sending import (
    DEADLINE_PASSED,
    EMAIL_UNSUBSCRIBED,
    SMS_OPTED_OUT,
    TOO_LATE,
    Cancel,
    Circumstances,
    Decision,
    Defer,
    Fail,
    Merge,
    PatientCaps,
    Send,
    Skip,
    decide,
)
from reminder_service.domain.sms_caps import SmsCaps, Text
from reminder_service.domain.sms_decision import Fallbacks, SmsOutcome
from reminder_service.domain.timing import Anchor, Offset, RelativeTime, SendWindow, Unit
from tests.factories import appointment, local, patient

NOW = local("Europe/London", 2026, 12, 3, 11)  # a Thursday morning, inside the window
NIGHT = local("Europe/London", 2026, 12, 3, 22)
MORNING = local("Europe/London", 2026, 12, 4, 8)
MOBILE = "+447700900123"
CAREGIVER_MOBILE = "+447700900456"
EMAIL = "test.patient@example.org"

CLINIC = Clinic(
    id="leeds", name="Leeds Haematology", timezone="Europe/London", phone="0113 000 0000",
    out_of_hours_phone="0113 000 0001", send_window=SendWindow(time(8), time(20)),
    default_language="en-GB", phone_region="GB", fasting_hours=6, no_bath_days=1,
    results_typical_days=7, results_chase_days=10, emergency_number="999",
    fever_threshold="38C", painkiller="paracetamol", local_only_driving_advice="",
    staff_email="staff@example.org", sms_caps=SmsCaps(per_day=1, per_week=3),
)  # fmt: skip
STEP = Step(
    "day_before", RelativeTime(Anchor.START, Offset(-1, Unit.DAYS), time(18)),
    (ChannelRule(Channel.SMS), ChannelRule(Channel.EMAIL)), "day_before",
)  # fmt: skip
CRITICAL = replace(STEP, priority=Priority.CRITICAL)
MERGES_WHEN_LATE = replace(STEP, too_late="merge")


def reminder(**changes: Any) -> Reminder:
    base = Reminder(
        id=7, appointment_id=1, appointment_version=1, step_id="day_before",
        channel=Channel.SMS, recipient=Recipient.PATIENT, template="day_before",
        status=ReminderStatus.SENDING, reason="planned", nominal_at=NOW, due_at=NOW,
        not_after=None, attempts=1, claim_token="token",
    )  # fmt: skip
    return replace(base, **changes)


def stored(**changes: Any) -> StoredAppointment:
    return StoredAppointment(
        id=1, appointment=appointment(**changes), patient_id=1, protocol_id="bone_marrow_biopsy",
        version=1, booked_at=NOW - timedelta(days=7), scheduled_at=NOW - timedelta(days=7),
    )  # fmt: skip


def with_caregiver(**changes: Any) -> StoredAppointment:
    caregiver = Caregiver("Sam Carer", CAREGIVER_MOBILE, "son", sms_consent=True, copies=True)
    return stored(patient=patient(caregiver=replace(caregiver, **changes)))


def sent_today(count: int) -> list[Text]:
    return [Text(("sent", i), NOW - timedelta(hours=1), sent=True) for i in range(count)]


def caps(others: list[Text], fallbacks: Fallbacks) -> PatientCaps:
    return PatientCaps(others, fallbacks)


EMAIL_INSTEAD = Fallbacks(email=True, merge_line=False)
MERGE_FIRST = Fallbacks(email=True, merge_line=True, prefer_merge=True)
NOWHERE = Fallbacks(email=False, merge_line=False)
LATER_TEXT = Text((1, "escort", NOW), NOW + timedelta(days=1), group=1)
OVER = "over the SMS cap (1 a day, 3 in 7 days)"

# (id, reminder, stored appointment, now, circumstances besides the clinic and step, expected)
CASES: list[tuple[str, Reminder, StoredAppointment, datetime, dict[str, Any], Decision]] = [
    ("sends to the patient's mobile", reminder(), stored(), NOW, {}, Send(MOBILE)),
    ("sends an email to the patient's address", reminder(channel=Channel.EMAIL), stored(), NOW,
     {}, Send(EMAIL)),
    ("unknown clinic fails", reminder(), stored(), NOW, {"clinic": None},
     Fail("unknown clinic 'riverside'")),
    ("a staff alert goes to the staff address", reminder(recipient=Recipient.STAFF,
     channel=Channel.EMAIL), stored(), NIGHT, {}, Send("staff@example.org")),
    ("a staff alert without a staff address fails", reminder(recipient=Recipient.STAFF,
     channel=Channel.EMAIL), stored(), NOW, {"clinic": replace(CLINIC, staff_email="")},
     Fail("the clinic has no staff_email")),
    ("a cancelled appointment's reminder is cancelled", reminder(),
     stored(status=AppointmentStatus.CANCELLED), NOW, {}, Cancel("appointment cancelled")),
    ("the cancellation message itself still goes", reminder(template="cancelled"),
     stored(status=AppointmentStatus.CANCELLED), NOW, {}, Send(MOBILE)),
    ("a deceased patient gets nothing", reminder(), stored(patient=patient(deceased=True)), NOW,
     {}, Skip("the patient is recorded as deceased")),
    ("do-not-contact is honoured", reminder(), stored(patient=patient(do_not_contact=True)),
     NOW, {}, Skip("the patient is marked do-not-contact")),
    ("attempts used up", reminder(attempts=21), stored(), NOW, {},
     Fail("gave up after 20 attempts", undeliverable=True)),
    ("the last attempt allowed still goes", reminder(attempts=20), stored(), NOW, {},
     Send(MOBILE)),
    ("past its deadline: skipped", reminder(not_after=NOW - timedelta(minutes=1)), stored(), NOW,
     {}, Skip(DEADLINE_PASSED)),
    ("past its deadline, critical: staff must hear", reminder(not_after=NOW - timedelta(1)),
     stored(), NOW, {"step": CRITICAL}, Skip(DEADLINE_PASSED, undeliverable=True)),
    ("at night it waits for the window", reminder(), stored(), NIGHT, {}, Defer(MORNING)),
    ("at night, a deadline before the window: skipped", reminder(not_after=NIGHT + timedelta(
     hours=2)), stored(), NIGHT, {}, Skip(TOO_LATE)),
    ("at night, too late, the step merges", reminder(not_after=NIGHT + timedelta(hours=2)),
     stored(), NIGHT, {"step": MERGES_WHEN_LATE}, Merge(f"{TOO_LATE}: merged into the next text")),
    ("too late, an email never merges", reminder(channel=Channel.EMAIL, not_after=NIGHT
     + timedelta(hours=2)), stored(), NIGHT, {"step": MERGES_WHEN_LATE}, Skip(TOO_LATE)),
    ("the caregiver's copy goes to the caregiver", reminder(recipient=Recipient.CAREGIVER),
     with_caregiver(), NOW, {}, Send(CAREGIVER_MOBILE)),
    ("the caregiver withdrew consent", reminder(recipient=Recipient.CAREGIVER),
     with_caregiver(sms_consent=False), NOW, {}, Skip(CAREGIVER_NO_CONSENT)),
    ("a copy goes without the patient's SMS consent", reminder(recipient=Recipient.CAREGIVER),
     stored(patient=patient(sms_consent="", caregiver=Caregiver("Sam", CAREGIVER_MOBILE, "son",
     sms_consent=True, copies=True))), NOW, {}, Send(CAREGIVER_MOBILE)),
    ("no mobile number", reminder(), stored(patient=patient(mobile=None)), NOW, {},
     Skip("no mobile number")),
    ("no email address", reminder(channel=Channel.EMAIL), stored(patient=patient(email=None)),
     NOW, {}, Skip("no email address")),
    ("no SMS consent", reminder(), stored(patient=patient(sms_consent="")), NOW, {},
     Skip(NO_SMS_CONSENT, undeliverable=True)),
    ("the number opted out", reminder(), stored(), NOW, {"sms_opted_out": {MOBILE}},
     Skip(SMS_OPTED_OUT, undeliverable=True)),
    ("the caregiver's number opted out", reminder(recipient=Recipient.CAREGIVER),
     with_caregiver(), NOW, {"sms_opted_out": {CAREGIVER_MOBILE}},
     Skip(SMS_OPTED_OUT, undeliverable=True)),
    ("the address unsubscribed", reminder(channel=Channel.EMAIL), stored(), NOW,
     {"email_unsubscribed": {EMAIL}}, Skip(EMAIL_UNSUBSCRIBED, undeliverable=True)),
    ("an unsubscribed address does not stop a text", reminder(), stored(), NOW,
     {"email_unsubscribed": {EMAIL}}, Send(MOBILE)),
    ("within the caps it goes and counts", reminder(), stored(), NOW,
     {"caps": caps([], NOWHERE)}, Send(MOBILE, caps=SmsOutcome.SEND)),
    ("over the caps, by email instead", reminder(), stored(), NOW,
     {"caps": caps(sent_today(1), EMAIL_INSTEAD)},
     Skip(f"{OVER}: by email instead", undeliverable=True, caps=SmsOutcome.BY_EMAIL)),
    ("over the caps, merged into the next text", reminder(), stored(), NOW,
     {"caps": caps([*sent_today(1), LATER_TEXT], MERGE_FIRST)},
     Merge(f"{OVER}: merged into the next text", caps=SmsOutcome.MERGE)),
    ("over the caps, no other way: staff are told", reminder(), stored(), NOW,
     {"caps": caps(sent_today(1), NOWHERE)},
     Skip(f"{OVER}, and no other way to reach the patient", undeliverable=True,
          caps=SmsOutcome.ALERT_STAFF)),
    ("over the caps, a critical text goes and says so", reminder(), stored(), NOW,
     {"step": CRITICAL, "caps": caps(sent_today(1), NOWHERE)},
     Send(MOBILE, f"critical: sent although {OVER}", SmsOutcome.SEND)),
    ("the caps are the patient's: a copy is not weighed", reminder(recipient=Recipient.CAREGIVER),
     with_caregiver(), NOW, {"caps": caps(sent_today(1), NOWHERE)}, Send(CAREGIVER_MOBILE)),
    ("emails are not weighed by the SMS caps", reminder(channel=Channel.EMAIL), stored(), NOW,
     {"caps": caps(sent_today(1), NOWHERE)}, Send(EMAIL)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reminder_", "stored_", "now", "given", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_decide(
    reminder_: Reminder,
    stored_: StoredAppointment,
    now: datetime,
    given: dict[str, Any],
    expected: Decision,
) -> None:
    circumstances = Circumstances(**{"clinic": CLINIC, "step": STEP, "max_attempts": 20, **given})
    assert decide(reminder_, stored_, now, circumstances) == expected


def test_the_first_failing_check_wins() -> None:
    """A cancelled appointment of a patient since marked deceased, at night, past its
    deadline: cancelled, the first reason in the order the checks run."""
    late = reminder(not_after=NOW - timedelta(days=1), attempts=99)
    appt = stored(status=AppointmentStatus.CANCELLED, patient=patient(deceased=True))
    given = Circumstances(CLINIC, STEP, 20, {MOBILE}, caps=caps(sent_today(3), NOWHERE))
    assert decide(late, appt, NIGHT, given) == Cancel("appointment cancelled")


def test_the_text_weighed_is_this_one_at_the_time_of_sending() -> None:
    """The reminder's own text joins the caps at `now`, keyed as the patient's texts are."""
    this = text_of(CRITICAL, 1, "day_before", NOW, NOW)
    assert this.key == reminder().text_key
    assert this.critical and this.at == NOW and this.group == 1


def test_deciding_at_ever_new_moments_memoises_none_of_them() -> None:
    """The send window is checked at `now`, new at every batch: memoising it grew a long-running
    dispatcher's memory by an entry a batch."""
    memo = timing._next_allowed
    memo.cache_clear()
    given = Circumstances(CLINIC, STEP, 20)
    for minutes in range(50):
        moment = NOW + timedelta(minutes=minutes)
        assert decide(reminder(), stored(), moment, given) == Send(MOBILE)
        assert decide(reminder(), stored(), NIGHT + timedelta(minutes=minutes), given) == Defer(
            MORNING
        )
    assert memo.cache_info().currsize == 0
