"""SMS caps: at most N texts per calendar day and M per rolling 7 days, per patient.

Pure. Given the texts a patient has been sent (fixed) and those still to come, for all of their
appointments (each with the step's `sms_priority`), which ones must give way? While some day or
7-day window holds more than its cap, the lowest-priority text still to come in that window gives
way (between equals the earlier one, as the later is nearer the appointment and the fresher
advice): it goes by email instead. Deciding over what is to come, not only what is due now, is what
keeps an early low-priority text (escort advice) from using the slot a later, more important one
(post-procedure warning signs) needs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

WEEK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class SmsCaps:
    per_day: int = 1  # per calendar day in the patient's zone; 0: no cap
    per_week: int = 3  # per rolling 7 days; 0: no cap

    def describe(self) -> str:
        parts = []
        if self.per_day:
            parts.append(f"{self.per_day} a day")
        if self.per_week:
            parts.append(f"{self.per_week} in 7 days")
        return ", ".join(parts) or "no cap"


DEFAULT_SMS_CAPS = SmsCaps()  # shared/CLINICAL.md: 1 a day, 3 in 7 days


@dataclass(frozen=True, slots=True)
class Text:
    key: Hashable
    at: datetime
    priority: int = 1
    sent: bool = False  # already went out: counts, can never give way


def give_way(texts: Sequence[Text], caps: SmsCaps, tz: ZoneInfo) -> set[Hashable]:
    """The keys of the texts to come that must give way so every window keeps its cap."""
    if not caps.per_day and not caps.per_week:
        return set()
    kept = sorted(texts, key=lambda t: t.at)
    dropped: set[Hashable] = set()
    while (window := _over(kept, caps, tz)) is not None:
        candidates = [t for t in window if not t.sent]
        if not candidates:
            break  # only texts already sent: nothing left to decide
        victim = min(candidates, key=lambda t: (t.priority, t.at))
        dropped.add(victim.key)
        kept.remove(victim)
    return dropped


def _over(texts: list[Text], caps: SmsCaps, tz: ZoneInfo) -> list[Text] | None:
    """The first window (in time order) holding more texts than its cap, or None."""
    for i, text in enumerate(texts):
        if caps.per_day:
            day = text.at.astimezone(tz).date()
            same_day = [t for t in texts[: i + 1] if t.at.astimezone(tz).date() == day]
            if len(same_day) > caps.per_day:
                return same_day
        if caps.per_week:
            week = [t for t in texts[: i + 1] if text.at - t.at < WEEK]
            if len(week) > caps.per_week:
                return week
    return None
