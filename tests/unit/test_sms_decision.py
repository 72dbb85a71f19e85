"""What becomes of each text under the SMS caps: the one decision preview and dispatch share."""

from __future__ import annotations

from datetime import datetime

from reminder_service.domain.sms_caps import SmsCaps, Text
from reminder_service.domain.sms_decision import Fallbacks, SmsOutcome, decide
from reminder_service.domain.timing import zone
from tests.factories import local

LONDON = zone("Europe/London")
CAPS = SmsCaps(per_day=1, per_week=3)
NOWHERE = Fallbacks(email=False, merge_line=False)


def at(day: int, hour: int) -> datetime:
    return local("Europe/London", 2026, 12, day, hour)


def week(booked_group: str = "A1") -> list[Text]:
    return [
        Text("booked", at(3, 11), group=booked_group),
        Text("medicines", at(3, 12), critical=True, group="A1"),
        Text("escort", at(8, 10), critical=True, group="A1"),
    ]


def test_a_standard_text_that_gives_way_goes_where_the_patient_and_step_allow() -> None:
    email_first = Fallbacks(email=True, merge_line=True)
    merge_first = Fallbacks(email=True, merge_line=True, prefer_merge=True)
    assert decide(week(), CAPS, LONDON, {"booked": email_first})["booked"].outcome is (
        SmsOutcome.BY_EMAIL
    )
    merged = decide(week(), CAPS, LONDON, {"booked": merge_first})["booked"]
    assert merged.outcome is SmsOutcome.MERGE
    assert merged.reason == "over the SMS cap (1 a day, 3 in 7 days): merged into the next text"
    no_email = Fallbacks(email=False, merge_line=True)
    assert decide(week(), CAPS, LONDON, {"booked": no_email})["booked"].outcome is SmsOutcome.MERGE
    nowhere = decide(week(), CAPS, LONDON, {"booked": NOWHERE})["booked"]
    assert nowhere.outcome is SmsOutcome.ALERT_STAFF


def test_a_merge_needs_a_later_text_of_the_same_appointment() -> None:
    # The booking is for another appointment, whose texts are all done: no text to ride on.
    lonely = Fallbacks(email=False, merge_line=True)
    decision = decide(week(booked_group="A2"), CAPS, LONDON, {"booked": lonely})["booked"]
    assert decision.outcome is SmsOutcome.ALERT_STAFF


def test_a_critical_text_is_sent_and_says_when_it_goes_over_the_cap() -> None:
    texts = [Text("sent", at(3, 9), sent=True), Text("medicines", at(3, 12), critical=True)]
    decision = decide(texts, CAPS, LONDON, {"medicines": NOWHERE})["medicines"]
    assert decision.outcome is SmsOutcome.SEND
    assert decision.reason == "critical: sent although over the SMS cap (1 a day, 3 in 7 days)"
    alone = decide(texts[1:], CAPS, LONDON, {"medicines": NOWHERE})["medicines"]
    assert (alone.outcome, alone.reason) == (SmsOutcome.SEND, "")


def test_no_caps_means_every_text_goes() -> None:
    decisions = decide(week(), SmsCaps(0, 0), LONDON, {"booked": NOWHERE, "escort": NOWHERE})
    assert {d.outcome for d in decisions.values()} == {SmsOutcome.SEND}
