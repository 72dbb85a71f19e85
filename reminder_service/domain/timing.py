"""Moments relative to an appointment, computed in the patient's time zone.

Policy (documented in the README):
- Offsets in minutes or hours are elapsed time: "2 hours after the end" is 7,200 s later in UTC.
- Offsets in days are calendar days in the patient's zone: "1 day before" keeps the wall-clock time
  (or the `at` time) on the previous local date, whatever DST did in between.
- A local time that does not exist (spring forward) resolves with the offset in force before the
  gap, so 02:30 becomes 03:30; a local time that repeats (fall back) takes its first occurrence.
  Both are PEP 495 `fold=0` semantics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo


class Anchor(StrEnum):
    BOOKING = "booking"  # when the current appointment time was set (first booking or a reschedule)
    START = "start"
    END = "end"  # start + expected duration


class Unit(StrEnum):
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"


@dataclass(frozen=True, slots=True)
class Offset:
    amount: int  # signed: negative is before the anchor
    unit: Unit
    # Minutes and hours as elapsed time (days are calendar days: see resolve).
    elapsed: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        minutes = self.amount * (60 if self.unit is Unit.HOURS else 1)
        object.__setattr__(self, "elapsed", timedelta(minutes=minutes))

    def describe(self) -> str:
        if self.amount == 0:
            return "at"
        n = abs(self.amount)
        unit = self.unit.value[:-1] if n == 1 else self.unit.value
        return f"{n} {unit} {'before' if self.amount < 0 else 'after'}"


@dataclass(frozen=True, slots=True)
class RelativeTime:
    anchor: Anchor
    offset: Offset
    at: time | None = None  # a local wall-clock time; only with a day offset
    # Planning hashes these millions of times (memo keys); a generated hash would recompute it.
    _hash: int = field(init=False, repr=False, compare=False)
    # A lower bound on (resolved moment - anchor), so a planner can tell a step cannot fall in a
    # time window without resolving it. Calendar days with an `at` time can land up to a day
    # earlier than the plain offset, and DST shifts by at most a few hours: two days covers both.
    earliest_shift: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.anchor, self.offset, self.at)))
        if self.offset.unit is Unit.DAYS:
            shift = timedelta(days=self.offset.amount - 2)
        else:
            shift = self.offset.elapsed
        object.__setattr__(self, "earliest_shift", shift)

    def __hash__(self) -> int:
        return self._hash

    def describe(self) -> str:
        text = f"{self.offset.describe()} {self.anchor.value}"
        return f"{text} at {self.at:%H:%M}" if self.at else text


@dataclass(frozen=True, slots=True)
class AnchorTimes:
    booking: datetime
    start: datetime
    end: datetime

    def of(self, anchor: Anchor) -> datetime:
        moment: datetime = getattr(self, anchor)  # an Anchor is a str: the attribute's name
        return moment


_OFFSET = re.compile(r"^\s*(\d+)\s+(minute|hour|day)s?(?:\s+(before|after))?\s*$", re.IGNORECASE)


def parse_offset(text: str) -> Offset:
    """Parse "7 days before", "2 hours after", "30 minutes before" or "0 days"."""
    match = _OFFSET.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not an offset; write e.g. '7 days before', '2 hours after' or '0 minutes'"
        )
    amount, unit, direction = int(match[1]), Unit(match[2].lower() + "s"), (match[3] or "").lower()
    if amount and not direction:
        raise ValueError(f"{text!r} needs 'before' or 'after'")
    return Offset(-amount if direction == "before" else amount, unit)


def parse_local_time(text: str) -> time:
    try:
        parsed = time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day; write HH:MM, e.g. '18:00'") from None
    return parsed.replace(second=0, microsecond=0)


_DAYS = Unit.DAYS


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_to_utc(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """A local wall-clock time to UTC, with the gap and fold policy in the module docstring."""
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)


def resolve(moment: RelativeTime, anchors: AnchorTimes, tz: ZoneInfo) -> datetime:
    base: datetime = getattr(anchors, moment.anchor)
    offset = moment.offset
    if offset.unit is _DAYS:
        return _calendar_days(base, offset.amount, moment.at, tz)
    return base + offset.elapsed


# Pure and called millions of times on a large import with few distinct arguments (appointments
# share dates and slots), so memoised; the key is cheap to hash. A 50,000-row import has about
# 3,600 distinct ones. The dispatcher plans again each patient's appointments it sends to, so a
# long-running process would fill the memo: MEMO_SIZE bounds it (an entry is about 300 bytes).
MEMO_SIZE = 8192


@lru_cache(maxsize=MEMO_SIZE)
def _calendar_days(base: datetime, days: int, at: time | None, tz: ZoneInfo) -> datetime:
    local = base.astimezone(tz)
    wall = at if at is not None else local.time().replace(tzinfo=None)
    return local_to_utc(local.date() + timedelta(days=days), wall, tz)


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Recipient-local hours in which messages may go out; [opens, closes)."""

    opens: time
    closes: time
    _hash: int = field(init=False, repr=False, compare=False)  # a memo key: hash it once

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.opens, self.closes)))

    def __hash__(self) -> int:
        return self._hash

    def next_allowed(self, when: datetime, tz: ZoneInfo) -> datetime:
        """`when` if inside the window, else the next opening (never earlier than `when`)."""
        return _next_allowed(self, when, tz)

    def next_allowed_now(self, now: datetime, tz: ZoneInfo) -> datetime:
        """`next_allowed` for the moment of sending, not memoised: `now` is new at every call,
        so a memo would only fill up (a long-running dispatcher's memory grew with it)."""
        return _next_allowed.__wrapped__(self, now, tz)


@lru_cache(maxsize=MEMO_SIZE)
def _next_allowed(window: SendWindow, when: datetime, tz: ZoneInfo) -> datetime:
    local = when.astimezone(tz)
    wall = local.time().replace(tzinfo=None)
    if window.opens <= wall < window.closes:
        return when
    day = local.date() if wall < window.opens else local.date() + timedelta(days=1)
    return max(local_to_utc(day, window.opens, tz), when)


_RELATIVE = re.compile(
    r"^\s*(?:(?P<offset>\d+\s+\w+\s+(?:before|after))\s+|at\s+)?(?P<anchor>\w+)"
    r"(?:\s+at\s+(?P<at>\S+))?\s*$",
    re.IGNORECASE,
)


def parse_relative_time(text: str) -> RelativeTime:
    """Parse "7 days before start at 10:00", "2 hours after end", "at booking" or "start"."""
    match = _RELATIVE.match(text)
    anchors = ", ".join(a.value for a in Anchor)
    if not match:
        raise ValueError(
            f"{text!r} is not a moment; write e.g. '1 day before start at 18:00', "
            f"'2 hours after end' or 'at booking' (anchors: {anchors})"
        )
    try:
        anchor = Anchor(match["anchor"].lower())
    except ValueError:
        raise ValueError(f"unknown anchor {match['anchor']!r} (anchors: {anchors})") from None
    offset = parse_offset(match["offset"]) if match["offset"] else Offset(0, Unit.MINUTES)
    at = parse_local_time(match["at"]) if match["at"] else None
    if at is not None:
        if offset.unit is not Unit.DAYS and offset.amount:
            raise ValueError(f"{text!r}: 'at HH:MM' goes with an offset in days")
        offset = Offset(offset.amount, Unit.DAYS)
    return RelativeTime(anchor, offset, at)


def parse_duration(text: str) -> timedelta:
    """Parse "2 days", "24 hours" or "90 minutes"."""
    match = re.match(r"^\s*(\d+)\s+(minute|hour|day)s?\s*$", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write e.g. '2 days' or '24 hours'")
    return timedelta(**{match[2].lower() + "s": int(match[1])})
