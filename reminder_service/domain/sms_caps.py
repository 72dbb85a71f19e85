"""SMS caps: at most N texts per calendar day and M per rolling 7 days, per patient.

Pure. Given the texts a patient has been sent (fixed) and those still to come, for all of their
appointments, which ones must give way? While some day or 7-day window holds more than its cap,
a standard text still to come in that window gives way: the lowest `sms_priority` first,
between equals the earlier one (the later is nearer the appointment and the fresher advice).

A critical text never gives way. When a window holds only texts already sent and critical texts,
it stays over its cap: the caps keep a patient from being pestered, and must never be the reason
they miss the blood-thinner plan or the warning signs. Deciding over what is to come, not only
what is due now, is what keeps an early standard text from using the slot a critical one needs.
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
    priority: int = 1  # among standard texts, the lowest gives way first
    sent: bool = False  # already went out: counts, can never give way
    critical: bool = False  # never gives way
    group: Hashable = None  # the appointment it is for: a merged line rides on a later one

    @property
    def may_give_way(self) -> bool:
        return not self.sent and not self.critical


def give_way(texts: Sequence[Text], caps: SmsCaps, tz: ZoneInfo) -> set[Hashable]:
    """The keys of the texts to come that must give way so every window keeps its cap, as far
    as standard texts can make room."""
    if not caps.per_day and not caps.per_week:
        return set()
    kept = sorted(texts, key=lambda t: t.at)
    dropped: set[Hashable] = set()
    while (window := _over(kept, caps, tz)) is not None:
        # Between equals in time too, an order fixed by the keys: whichever text is decided
        # first, the same one gives way (and preview says which).
        victim = min(
            (t for t in window if t.may_give_way), key=lambda t: (t.priority, t.at, str(t.key))
        )
        dropped.add(victim.key)
        kept.remove(victim)
    return dropped


def _over(texts: list[Text], caps: SmsCaps, tz: ZoneInfo) -> list[Text] | None:
    """The first window (in time order) holding more texts than its cap and a text that may
    give way, or None."""
    days = [t.at.astimezone(tz).date() for t in texts]
    for i, text in enumerate(texts):
        if caps.per_day:
            same_day = [t for t, d in zip(texts[: i + 1], days, strict=False) if d == days[i]]
            if len(same_day) > caps.per_day and any(t.may_give_way for t in same_day):
                return same_day
        if caps.per_week:
            week = [t for t in texts[: i + 1] if text.at - t.at < WEEK]
            if len(week) > caps.per_week and any(t.may_give_way for t in week):
                return week
    return None


class PatientTexts:
    """Per patient, the texts the caps weigh: those sent lately and those still to come, of
    every appointment they have booked. The dispatcher keeps it current through a batch: a text
    it lets go counts as sent, one it turns away no longer counts at all."""

    def __init__(self, history: dict[int, list[datetime]], to_come: dict[int, list[Text]]) -> None:
        self._history = history
        self._to_come = {patient: {t.key: t for t in texts} for patient, texts in to_come.items()}

    def of(self, patient_id: int) -> list[Text]:
        history = self._history.get(patient_id, [])
        sent = [Text(("sent", i), at, sent=True) for i, at in enumerate(history)]
        return [*sent, *self._to_come.get(patient_id, {}).values()]

    def went(self, patient_id: int, key: Hashable, at: datetime) -> None:
        """A text let go now: it counts as sent for the rest of the batch."""
        self._history.setdefault(patient_id, []).append(at)
        self.turned_away(patient_id, key)

    def turned_away(self, patient_id: int, key: Hashable) -> None:
        """A text that will not go by SMS: it no longer counts."""
        self._to_come.get(patient_id, {}).pop(key, None)
