"""Which critical steps no channel can deliver: known at import, for staff to act on at once."""

from __future__ import annotations

from datetime import timedelta

from reminder_service.configuration.protocols import load_protocols
from reminder_service.domain.appointment import Tristate
from reminder_service.domain.reachability import (
    UnreachableMemo,
    unreachable_critical_steps,
    unreachable_steps,
)
from tests.factories import CONFIG_DIR, appointment, patient

PROTOCOL = load_protocols(CONFIG_DIR / "protocols", lambda *_: [])[0]


def blocked(opted_out: bool = False, **patient_changes: object) -> dict[str, str]:
    appt = appointment(patient=patient(**patient_changes))
    booked = appt.start - timedelta(days=14)
    return dict(unreachable_critical_steps(appt, PROTOCOL, booked, opted_out))


def test_a_patient_with_a_textable_mobile_or_an_email_is_reached() -> None:
    assert blocked() == {}
    assert blocked(email=None) == {}
    assert blocked(sms_consent="") == {}  # email only, by consent
    assert blocked(mobile=None) == {}


def test_no_channel_at_all_names_each_critical_step_and_why() -> None:
    found = blocked(email=None, mobile=None)
    assert set(found) == {"medicines", "escort", "day_before", "after_care", "next_day"}
    assert found["day_before"] == "sms: no mobile number; email: no email address"
    assert blocked(email=None, sms_consent="")["escort"] == (
        "email: no email address; sms: no SMS consent"  # in the order the step lists them
    )
    assert blocked(True, email=None)["after_care"] == (
        "sms: the number has opted out; email: no email address"
    )


def test_steps_that_do_not_apply_and_suppressed_patients_raise_nothing() -> None:
    calm = appointment(
        patient=patient(email=None, mobile=None), sedation=Tristate.NO, anticoagulant=Tristate.NO
    )
    steps = dict(unreachable_critical_steps(calm, PROTOCOL, calm.start - timedelta(days=9), False))
    assert "escort" not in steps  # no sedation: the escort step does not apply
    # Not on blood thinners: the blood-thinner text is not for them, so no alert either.
    assert "medicines" not in steps
    assert "day_before" in steps
    assert blocked(email=None, mobile=None, do_not_contact=True) == {}


def test_the_memo_answers_as_the_function_does_for_every_kind_of_patient() -> None:
    memo = UnreachableMemo()
    kinds = [
        {}, {"email": None}, {"mobile": None}, {"email": None, "mobile": None},
        {"email": None, "sms_consent": ""}, {"email": None, "mobile": None, "deceased": True},
    ]  # fmt: skip
    for flags in (Tristate.YES, Tristate.NO, Tristate.UNKNOWN):
        for changes in kinds:
            for opted_out in (False, True):
                for notice in (timedelta(hours=2), timedelta(days=9), timedelta(days=30)):
                    appt = appointment(
                        patient=patient(**changes), sedation=flags, anticoagulant=flags
                    )
                    booked = appt.start - notice
                    expected = unreachable_steps(appt, PROTOCOL, booked, opted_out)
                    assert memo(appt, PROTOCOL, booked, opted_out) == expected
