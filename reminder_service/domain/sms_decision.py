"""What becomes of each SMS under the caps: one decision, made the same way for preview and send.

Pure. `give_way` says which standard texts must make room; this says where each of those goes
instead, from what the patient and the step allow, in the step's order of preference:
- merged: one line of it rides on the appointment's next text (only if one is still to come);
- by email: the patient has an address and the step goes by email;
- otherwise it reaches nobody, and the clinic's staff are told.
A critical text is always sent, over the caps if need be; the decision says so.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from .sms_caps import WEEK, SmsCaps, Text, give_way


class SmsOutcome(StrEnum):
    SEND = "send"
    MERGE = "merge"  # one line of it joins the appointment's next text
    BY_EMAIL = "by_email"  # the step goes by email instead
    ALERT_STAFF = "alert_staff"  # no other way reaches the patient: the clinic is told


@dataclass(frozen=True, slots=True)
class Fallbacks:
    """Where a text that gives way can go instead."""

    email: bool  # the patient has an address and the step goes by email (its own or fallback)
    merge_line: bool  # the step's template has a merge line
    prefer_merge: bool = False  # the step's over_cap says "merge" first


@dataclass(frozen=True, slots=True)
class SmsDecision:
    outcome: SmsOutcome
    reason: str = ""


SEND = SmsDecision(SmsOutcome.SEND)
_INSTEAD = {SmsOutcome.MERGE: "merged into the next text", SmsOutcome.BY_EMAIL: "by email instead"}


def decide(
    texts: Sequence[Text],
    caps: SmsCaps,
    tz: ZoneInfo,
    asked: Mapping[Hashable, Fallbacks],
) -> dict[Hashable, SmsDecision]:
    """For each key in `asked` (texts among `texts`), what becomes of it."""
    dropped = give_way(texts, caps, tz)
    kept = [t for t in texts if t.key not in dropped]
    decisions: dict[Hashable, SmsDecision] = {}
    for text in texts:
        fallbacks = asked.get(text.key)
        if fallbacks is None:
            continue
        if text.key in dropped:
            decisions[text.key] = _instead(text, kept, fallbacks, caps)
        elif text.critical and _over_cap(text, kept, caps, tz):
            reason = f"critical: sent although over the SMS cap ({caps.describe()})"
            decisions[text.key] = SmsDecision(SmsOutcome.SEND, reason)
        else:
            decisions[text.key] = SEND
    return decisions


def _instead(text: Text, kept: list[Text], fallbacks: Fallbacks, caps: SmsCaps) -> SmsDecision:
    over = f"over the SMS cap ({caps.describe()})"
    # A merged line needs a later text of the same appointment that does go.
    carrier = any(t.group == text.group and t.at >= text.at and not t.sent for t in kept)
    available = {
        SmsOutcome.MERGE: fallbacks.merge_line and carrier and text.group is not None,
        SmsOutcome.BY_EMAIL: fallbacks.email,
    }
    order = (SmsOutcome.MERGE, SmsOutcome.BY_EMAIL)
    for outcome in order if fallbacks.prefer_merge else reversed(order):
        if available[outcome]:
            return SmsDecision(outcome, f"{over}: {_INSTEAD[outcome]}")
    return SmsDecision(SmsOutcome.ALERT_STAFF, f"{over}, and no other way to reach the patient")


def _over_cap(text: Text, kept: list[Text], caps: SmsCaps, tz: ZoneInfo) -> bool:
    """Whether a window holding `text` has more texts than its cap."""
    day = text.at.astimezone(tz).date()
    if caps.per_day and sum(1 for t in kept if t.at.astimezone(tz).date() == day) > caps.per_day:
        return True
    if not caps.per_week:
        return False
    # Any 7-day window holding the text: those ending at each text from it to a week after.
    ends = [t.at for t in kept if text.at <= t.at < text.at + WEEK]
    return any(sum(1 for t in kept if end - WEEK < t.at <= end) > caps.per_week for end in ends)
