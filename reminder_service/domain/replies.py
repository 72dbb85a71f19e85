"""What an inbound SMS means: opt-out, opt-in, help, a reply code, or free text for staff.

Pure. Keywords are matched on the whole reply, any case, with punctuation around it or a
trailing word ("Stop.", "stop please", "OPT OUT now"); CANCEL is an opt-out keyword, which is why
appointment replies use codes: 1 confirms, 2 asks for a new time (shared/CLINICAL.md).
"""

from __future__ import annotations

import re
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
