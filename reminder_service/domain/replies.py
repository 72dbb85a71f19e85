"""What an inbound SMS means: opt-out, opt-in, help, a reply code, or free text for staff.

Pure. Keywords are matched on the whole reply, any case, with punctuation around it or a
trailing word ("Stop.", "stop please", "OPT OUT now"); CANCEL is an opt-out keyword, which is why
appointment replies use codes: 1 confirms, 2 asks for a new time (shared/CLINICAL.md).

Free text is for the clinic's staff; the patient gets one acknowledgement (passed to the team,
and a number for anything urgent) per number per ACKNOWLEDGE_EVERY, so a patient writing several
texts, or a chat between two auto-responders, never becomes a loop of acknowledgements.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum


class ReplyKind(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    CONFIRM = "confirm"
    NEW_TIME = "new_time"
    OTHER = "other"


OPT_OUT_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke"})
OPT_OUT_PHRASES = (("opt", "out"),)
OPT_IN_WORDS = frozenset({"start", "unstop", "yes"})
HELP_WORDS = frozenset({"help", "info"})
CODES = {"1": ReplyKind.CONFIRM, "2": ReplyKind.NEW_TIME}
# Replies a person must deal with (call back, read); the service answers the others itself.
FOR_STAFF = frozenset({ReplyKind.OTHER, ReplyKind.NEW_TIME})
ACKNOWLEDGE_EVERY = timedelta(hours=12)

_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


def classify_reply(body: str) -> ReplyKind:
    words = [w.casefold() for w in _WORDS.findall(body)]
    if not words:
        return ReplyKind.OTHER
    first = words[0]
    if first in OPT_OUT_WORDS or tuple(words[:2]) in OPT_OUT_PHRASES:
        return ReplyKind.OPT_OUT
    if first in OPT_IN_WORDS:
        return ReplyKind.OPT_IN
    if first in HELP_WORDS:
        return ReplyKind.HELP
    if len(words) == 1 and first in CODES:
        return CODES[first]
    return ReplyKind.OTHER


def acknowledge(kind: ReplyKind, last_acknowledged: datetime | None, now: datetime) -> bool:
    """Whether a reply gets the acknowledgement: free text, and none sent to the number within
    ACKNOWLEDGE_EVERY (a reply Twilio posts late, stamped before the last one, gets none)."""
    if kind is not ReplyKind.OTHER:
        return False
    return last_acknowledged is None or now - last_acknowledged >= ACKNOWLEDGE_EVERY
