from datetime import time, timedelta

import pytest

from reminder_service.domain.timing import (
    MEMO_SIZE,
    Anchor,
    AnchorTimes,
    Offset,
    RelativeTime,
    SendWindow,
    Unit,
    _calendar_days,
    _next_allowed,
    parse_duration,
    parse_offset,
    parse_relative_time,
    resolve,
    zone,
)
from tests.factories import local, utc

LONDON = zone("Europe/London")
NEW_YORK = zone("America/New_York")
WINDOW = SendWindow(time(8), time(20))


def anchors(start):  # type: ignore[no-untyped-def]
    return AnchorTimes(
        booking=start - timedelta(days=30), start=start, end=start + timedelta(hours=1)
    )


def test_day_before_at_local_time_keeps_wall_clock_across_spring_forward():
    # Clocks go forward in New York on Sunday 8 March 2026; the procedure is Monday 9 March.
    start = local("America/New_York", 2026, 3, 9, 9, 0)
    moment = parse_relative_time("1 day before start at 18:00")
    due = resolve(moment, anchors(start), NEW_YORK)
    assert due.astimezone(NEW_YORK).isoformat() == "2026-03-08T18:00:00-04:00"


def test_day_offset_without_at_keeps_wall_clock_across_fall_back():
    # London falls back at 02:00 on Sunday 25 October 2026: "1 day before" Sunday 09:30 GMT is
    # Saturday 09:30 BST, which is 25 hours earlier, not 24.
    start = local("Europe/London", 2026, 10, 25, 9, 30)
    due = resolve(parse_relative_time("1 day before start"), anchors(start), LONDON)
    assert due.astimezone(LONDON).isoformat() == "2026-10-24T09:30:00+01:00"
    assert start - due == timedelta(hours=25)


def test_hour_offsets_are_elapsed_time_across_a_transition():
    start = local("Europe/London", 2026, 3, 29, 3, 30)  # 03:30 BST, just after the gap
    due = resolve(parse_relative_time("3 hours before start"), anchors(start), LONDON)
    assert start - due == timedelta(hours=3)
    assert due.astimezone(LONDON).isoformat() == "2026-03-28T23:30:00+00:00"


def test_nonexistent_local_time_moves_forward_by_the_gap():
    # 02:30 on 8 March 2026 does not exist in New York: it resolves to 03:30 EDT.
    start = local("America/New_York", 2026, 3, 10, 9, 0)
    due = resolve(parse_relative_time("2 days before start at 02:30"), anchors(start), NEW_YORK)
    assert due.astimezone(NEW_YORK).isoformat() == "2026-03-08T03:30:00-04:00"


def test_repeated_local_time_takes_the_first_occurrence():
    # 01:30 happens twice in New York on 1 November 2026; the first is EDT (-04:00).
    start = local("America/New_York", 2026, 11, 2, 9, 0)
    due = resolve(parse_relative_time("1 day before start at 01:30"), anchors(start), NEW_YORK)
    assert due == utc(2026, 11, 1, 5, 30)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "7 days before start at 10:00",
            RelativeTime(Anchor.START, Offset(-7, Unit.DAYS), time(10)),
        ),
        ("2 hours after end", RelativeTime(Anchor.END, Offset(2, Unit.HOURS))),
        ("at booking", RelativeTime(Anchor.BOOKING, Offset(0, Unit.MINUTES))),
        ("start", RelativeTime(Anchor.START, Offset(0, Unit.MINUTES))),
        ("1 day after start at 10:00", RelativeTime(Anchor.START, Offset(1, Unit.DAYS), time(10))),
    ],
)
def test_parse_relative_time(text, expected):  # type: ignore[no-untyped-def]
    assert parse_relative_time(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7 weeks before start", "not an offset"),
        ("3 days start", "not a moment"),
        ("2 days before lunch", "unknown anchor 'lunch'"),
        ("2 hours before start at 10:00", "goes with an offset in days"),
        ("1 day before start at 25:00", "not a time of day"),
    ],
)
def test_parse_relative_time_errors_say_what_is_wrong(text, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        parse_relative_time(text)


def test_parse_offset_and_duration():
    assert parse_offset("30 minutes before") == Offset(-30, Unit.MINUTES)
    with pytest.raises(ValueError, match="needs 'before' or 'after'"):
        parse_offset("3 days")
    assert parse_duration("2 days") == timedelta(days=2)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_send_window_moves_early_and_late_times_to_the_next_opening():
    early = local("Europe/London", 2026, 12, 1, 6, 15)
    late = local("Europe/London", 2026, 12, 1, 21, 0)
    inside = local("Europe/London", 2026, 12, 1, 12, 0)
    assert WINDOW.next_allowed(early, LONDON) == local("Europe/London", 2026, 12, 1, 8, 0)
    assert WINDOW.next_allowed(late, LONDON) == local("Europe/London", 2026, 12, 2, 8, 0)
    assert WINDOW.next_allowed(inside, LONDON) == inside
    # 20:00 itself is closed: the window is [opens, closes).
    closing = local("Europe/London", 2026, 12, 1, 20, 0)
    assert WINDOW.next_allowed(closing, LONDON) == local("Europe/London", 2026, 12, 2, 8, 0)


def test_send_window_is_recipient_local():
    # 13:00 UTC is 08:00 in New York in winter: open there, though London is long open.
    moment = utc(2026, 12, 1, 12, 30)  # 07:30 in New York
    assert WINDOW.next_allowed(moment, NEW_YORK) == utc(2026, 12, 1, 13, 0)


def test_the_time_memos_stay_bounded_however_many_appointments_pass() -> None:
    """A long-running dispatcher resolves moments for every appointment it sends to; the memos
    that speed imports up keep at most MEMO_SIZE entries each."""
    day_before = RelativeTime(Anchor.START, Offset(-1, Unit.DAYS), time(18))
    first = local("Europe/London", 2026, 12, 1, 9, 0)
    for minutes in range(MEMO_SIZE + 500):
        start = first + timedelta(minutes=minutes)
        moment = resolve(day_before, anchors(start), LONDON).astimezone(LONDON)
        assert (moment.date(), moment.hour) == (start.date() - timedelta(days=1), 18)
        WINDOW.next_allowed(start, LONDON)
    assert _calendar_days.cache_info().currsize <= MEMO_SIZE
    assert _next_allowed.cache_info().currsize <= MEMO_SIZE
