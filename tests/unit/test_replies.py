"""Inbound SMS keywords: any case, with punctuation or a trailing word; codes, not words, for
appointment replies."""

from datetime import UTC, datetime, timedelta

import pytest

from reminder_service.domain.replies import (
    ACKNOWLEDGE_EVERY,
    ReplyKind,
    acknowledge,
    classify_reply,
)


@pytest.mark.parametrize(
    "body",
    ["STOP", "stop", "Stop.", " stop! ", "stop please", "STOPALL", "Unsubscribe", "cancel",
     "END", "quit", "Revoke", "opt out", "OPT-OUT", "Opt out now"],
)  # fmt: skip
def test_opt_out_keywords(body: str) -> None:
    assert classify_reply(body) is ReplyKind.OPT_OUT


@pytest.mark.parametrize("body", ["START", "unstop", "Yes", "yes!"])
def test_opt_in_keywords(body: str) -> None:
    assert classify_reply(body) is ReplyKind.OPT_IN


@pytest.mark.parametrize(
    ("body", "kind"),
    [("HELP", ReplyKind.HELP), ("help?", ReplyKind.HELP), ("1", ReplyKind.CONFIRM),
     (" 1. ", ReplyKind.CONFIRM), ("2", ReplyKind.NEW_TIME)],
)  # fmt: skip
def test_help_and_codes(body: str, kind: ReplyKind) -> None:
    assert classify_reply(body) is kind


@pytest.mark.parametrize(
    "body", ["", "   ", "Can I bring my daughter?", "12", "1 2", "please stop", "stopping by later"]
)
def test_anything_else_is_for_staff(body: str) -> None:
    # "please stop" is not an opt-out keyword reply; staff read it (and can opt the number out).
    assert classify_reply(body) is ReplyKind.OTHER


def test_free_text_is_acknowledged_once_per_number_per_interval() -> None:
    now = datetime(2026, 11, 19, 11, 0, tzinfo=UTC)
    assert acknowledge(ReplyKind.OTHER, None, now)
    assert not acknowledge(ReplyKind.OTHER, now - ACKNOWLEDGE_EVERY + timedelta(seconds=1), now)
    assert acknowledge(ReplyKind.OTHER, now - ACKNOWLEDGE_EVERY, now)
    # A reply stamped before the last acknowledgement (a late webhook) gets none either.
    assert not acknowledge(ReplyKind.OTHER, now + timedelta(minutes=1), now)
    for kind in set(ReplyKind) - {ReplyKind.OTHER}:
        assert not acknowledge(kind, None, now), kind
