"""Planning a caregiver's copies: beside every SMS of the patient's plan, at the same moments,
only when the patient chose copies, skipped with the reason when the caregiver cannot get them."""

from __future__ import annotations

from datetime import time

import pytest

from reminder_service.configuration.protocols import load_protocols
from reminder_service.domain.appointment import CAREGIVER_UNSAID, Caregiver, caregiver_copy
from reminder_service.domain.planning import Recipient, ReminderStatus, plan_reminders
from reminder_service.domain.reconcile import ExistingReminder, reconcile
from reminder_service.domain.timing import SendWindow
from tests.factories import CONFIG_DIR, appointment, local, patient

PROTOCOL = load_protocols(CONFIG_DIR / "protocols", lambda *_: [])[0]
WINDOW = SendWindow(time(8), time(20))
NOW = local("Europe/London", 2026, 11, 19, 11, 0)
CARER = Caregiver("Ann Carer", "+447700900456", "mother", sms_consent=True, copies=True)


def plan(**patient_changes):  # type: ignore[no-untyped-def]
    return plan_reminders(appointment(patient=patient(**patient_changes)), PROTOCOL, WINDOW,
                          NOW, NOW)  # fmt: skip


def split(plans):  # type: ignore[no-untyped-def]
    mine = [p for p in plans if p.recipient is Recipient.PATIENT]
    copies = [p for p in plans if p.recipient is Recipient.CAREGIVER]
    return mine, copies


def test_copies_mirror_every_sms_of_the_patient_at_the_same_moments() -> None:
    mine, copies = split(plan(caregiver=CARER))
    texts = [
        (p.step_id, p.nominal_at, p.due_at, p.status) for p in mine if p.channel.value == "sms"
    ]
    assert [(p.step_id, p.nominal_at, p.due_at, p.status) for p in copies] == texts
    assert {p.channel.value for p in copies} == {"sms"}
    assert mine == split(plan())[0]  # the patient's own plan is unchanged


@pytest.mark.parametrize(
    ("copies", "consent", "expected"),
    [
        (True, True, ReminderStatus.PENDING),
        (True, False, ReminderStatus.SKIPPED),
        (False, True, None),
        (False, False, None),
    ],
)
def test_consent_matrix(copies: bool, consent: bool, expected: ReminderStatus | None) -> None:
    caregiver = Caregiver("Ann Carer", "+447700900456", "", sms_consent=consent, copies=copies)
    _, planned = split(plan(caregiver=caregiver))
    booked = [p for p in planned if p.step_id == "booked"]
    assert [p.status for p in booked] == ([expected] if expected else [])


@pytest.mark.parametrize("caregiver", [None, CAREGIVER_UNSAID])
def test_no_caregiver_no_copies(caregiver: object) -> None:
    assert split(plan(caregiver=caregiver))[1] == []


def test_reasons_for_a_copy_that_cannot_go() -> None:
    same = split(plan(caregiver=Caregiver("A", "+447700900123", "", True, True)))[1][0]
    assert same.reason == "caregiver copy: the caregiver's mobile is the patient's, texted once"
    none = split(plan(caregiver=Caregiver("A", None, "", True, True)))[1][0]
    assert none.reason == "caregiver copy: no mobile number for the caregiver"
    suppressed = split(plan(caregiver=CARER, do_not_contact=True))[1][0]
    assert suppressed.reason == "the patient is marked do-not-contact"


def test_the_patients_own_lack_of_consent_or_mobile_does_not_stop_the_copy() -> None:
    _, copies = split(plan(caregiver=CARER, sms_consent="", mobile=None))
    booked = next(p for p in copies if p.step_id == "booked")
    assert booked.status is ReminderStatus.PENDING


def test_reconcile_tells_the_copy_from_the_patients_text() -> None:
    """Same step, channel and moment: the patient's sent text does not stand for the copy."""
    planned = [
        p for p in plan(caregiver=CARER) if p.step_id == "booked" and p.channel.value == "sms"
    ]
    mine = next(p for p in planned if p.recipient is Recipient.PATIENT)
    sent = ExistingReminder(1, "booked", mine.channel, mine.nominal_at, ReminderStatus.SENT)
    result = reconcile([sent], planned)
    assert [p.recipient for p in result.create] == [Recipient.CAREGIVER]


def test_the_copy_says_whom_it_is_for() -> None:
    assert caregiver_copy("Your appointment is booked.", patient()) == (
        "For Test: Your appointment is booked."
    )


def test_unsaid_consents_resolve_from_the_record_for_the_same_number_only() -> None:
    unsaid = Caregiver("Ann Carer", "+447700900456", "", sms_consent=None, copies=None)
    assert unsaid.consents_from(CARER).gets_copies
    moved = Caregiver("Ann Carer", "+447700900789", "", sms_consent=None, copies=None)
    assert not moved.consents_from(CARER).gets_copies
    assert not unsaid.consents_from(None).gets_copies
    said = Caregiver("Ann Carer", "+447700900456", "", sms_consent=False, copies=True)
    assert not said.consents_from(CARER).gets_copies  # what the source says wins
