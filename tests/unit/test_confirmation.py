"""Confirmation deadlines: the protocol's moment and condition, resolved like a step's; who must
be phoned; the bound the check narrows candidates with; the masked patient staff alerts name."""

from datetime import timedelta

import pytest

from reminder_service.domain.appointment import AppointmentStatus, Tristate, masked_patient
from reminder_service.domain.confirmation import (
    confirmation_deadline,
    latest_anchor_due,
    needs_a_call,
)
from reminder_service.domain.protocol import Condition, ConfirmationRule
from reminder_service.domain.timing import parse_relative_time
from tests.factories import appointment, local, patient

SEDATED = Condition((("sedation", frozenset({Tristate.YES, Tristate.UNKNOWN})),))
RULE = ConfirmationRule(parse_relative_time("48 hours before start"), SEDATED)
BOOKED = local("Europe/London", 2026, 11, 19, 11, 0)


def test_the_deadline_resolves_like_a_step_and_only_where_the_condition_holds() -> None:
    visit = appointment()  # Thu 10 Dec 09:30 London, sedation yes
    assert confirmation_deadline(RULE, visit, BOOKED) == visit.start - timedelta(hours=48)
    unknown = appointment(sedation=Tristate.UNKNOWN)
    assert confirmation_deadline(RULE, unknown, BOOKED) == visit.start - timedelta(hours=48)
    assert confirmation_deadline(RULE, appointment(sedation=Tristate.NO), BOOKED) is None
    cancelled = appointment(status=AppointmentStatus.CANCELLED)
    assert confirmation_deadline(RULE, cancelled, BOOKED) is None
    # Calendar days keep the patient's wall-clock time across a DST change (New York, 8 Mar).
    days = ConfirmationRule(parse_relative_time("2 days before start at 12:00"))
    american = appointment(
        start=local("America/New_York", 2027, 3, 15, 9, 0),
        patient=patient(timezone="America/New_York"),
    )
    assert confirmation_deadline(days, american, BOOKED) == local(
        "America/New_York", 2027, 3, 13, 12, 0
    )


def test_staff_phone_only_unconfirmed_appointments_past_their_deadline_and_still_to_come() -> None:
    visit = appointment()
    deadline = visit.start - timedelta(hours=48)
    assert needs_a_call(RULE, visit, BOOKED, None, deadline - timedelta(seconds=1)) is None
    assert needs_a_call(RULE, visit, BOOKED, None, deadline) == deadline
    assert needs_a_call(RULE, visit, BOOKED, deadline, deadline + timedelta(hours=1)) is None
    assert needs_a_call(RULE, visit, BOOKED, None, visit.start) is None  # too late to phone
    for suppressed in (patient(deceased=True), patient(do_not_contact=True)):
        unreachable = appointment(patient=suppressed)
        assert needs_a_call(RULE, unreachable, BOOKED, None, deadline) is None
    # Booked after its deadline had passed: due at once.
    late_booking = visit.start - timedelta(hours=5)
    assert needs_a_call(RULE, visit, late_booking, None, late_booking) == deadline


@pytest.mark.parametrize(
    "moment",
    ["48 hours before start", "2 days before start at 18:00", "30 minutes after booking",
     "1 day before end", "at start"],
)  # fmt: skip
def test_the_candidate_bound_never_leaves_out_an_appointment_whose_deadline_passed(
    moment: str,
) -> None:
    rule = ConfirmationRule(parse_relative_time(moment))
    anchor, _ = latest_anchor_due(rule, BOOKED)
    for hours in range(-24 * 4, 24 * 4, 7):
        visit = appointment(start=BOOKED + timedelta(hours=hours))
        scheduled = visit.start - timedelta(days=3)
        deadline = confirmation_deadline(rule, visit, scheduled)
        assert deadline is not None
        now = deadline + timedelta(minutes=1)
        _, latest = latest_anchor_due(rule, now)
        # The check compares the booking time for a booking anchor, else the start.
        compared = scheduled if anchor == "booking" else visit.start
        assert compared <= latest, (moment, hours)


def test_staff_alerts_name_a_patient_by_initials_and_the_last_digits() -> None:
    assert masked_patient(patient()) == "T. P. (mobile ending 123)"
    assert masked_patient(patient(first_name=" ", mobile=None)) == "P."
    assert masked_patient(patient(first_name="", last_name="", mobile="")) == "the patient"
