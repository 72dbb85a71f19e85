"""SMS caps: which texts give way, deciding over what is still to come."""

from __future__ import annotations

from datetime import datetime, timedelta

from reminder_service.domain.sms_caps import SmsCaps, Text, give_way
from reminder_service.domain.timing import zone
from tests.factories import local

LONDON = zone("Europe/London")
CAPS = SmsCaps(per_day=1, per_week=3)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return local("Europe/London", 2026, 12, day, hour, minute)


def test_the_default_biopsy_week_gives_up_the_escort_text_not_the_warning_signs() -> None:
    texts = [
        Text("medicines", at(3, 10), priority=3),
        Text("escort", at(8, 10), priority=0),
        Text("day_before", at(9, 18), priority=2),
        Text("after_care", at(10, 12, 30), priority=3),
        Text("next_day", at(11, 10), priority=3),
    ]
    assert give_way(texts, CAPS, LONDON) == {"escort"}


def test_two_texts_on_one_day_keep_the_higher_priority() -> None:
    texts = [Text("booked", at(7, 11), priority=2), Text("medicines", at(7, 11, 1), priority=3)]
    assert give_way(texts, CAPS, LONDON) == {"booked"}
    # A calendar day in the patient's zone: 23:30 and 00:30 London are two days.
    apart = [Text("a", at(7, 23, 30)), Text("b", at(8, 0, 30))]
    assert give_way(apart, CAPS, LONDON) == set()


def test_texts_already_sent_count_and_never_give_way() -> None:
    texts = [
        Text("sent-1", at(1, 10), sent=True),
        Text("sent-2", at(2, 10), sent=True),
        Text("sent-3", at(3, 10), sent=True),
        Text("due", at(4, 10), priority=9),
    ]
    assert give_way(texts, CAPS, LONDON) == {"due"}
    texts[-1] = Text("due", at(1, 10) + timedelta(days=7), priority=9)  # a week after the first
    assert give_way(texts, CAPS, LONDON) == set()


def test_equal_priorities_keep_the_later_text_and_no_cap_keeps_all() -> None:
    texts = [Text(n, at(n, 10)) for n in range(1, 6)]
    assert give_way(texts, CAPS, LONDON) == {1, 2}
    assert give_way(texts, SmsCaps(0, 0), LONDON) == set()


def test_a_critical_text_never_gives_way_and_a_window_of_them_stays_over_its_cap() -> None:
    texts = [
        Text("booked", at(3, 11), priority=9),  # standard, even with the highest sms_priority
        Text("medicines", at(3, 12), priority=0, critical=True),
        Text("escort", at(8, 10), critical=True),
        Text("day_before", at(9, 18), critical=True),
        Text("after_care", at(10, 12, 30), critical=True),
    ]
    assert give_way(texts, CAPS, LONDON) == {"booked"}


def test_a_window_that_cannot_make_room_does_not_stop_the_later_ones() -> None:
    texts = [
        Text("sent", at(1, 10), sent=True),
        Text("critical", at(1, 12), critical=True),  # day 1 stays over its cap: nothing can go
        Text("a", at(5, 10)),
        Text("b", at(5, 11)),  # day 5 is over its cap too, and can make room
    ]
    assert give_way(texts, CAPS, LONDON) == {"a"}
