"""Bounces: the envelope sender that names each email, and reading delivery status notifications."""

from __future__ import annotations

from pathlib import Path

import pytest

from reminder_service.channels.bounces import BounceAddress, DeliveryReport, read_dsn

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bounces"
ADDRESS = BounceAddress("bounces@mail.clinic.example", b"a test secret, 32 bytes long....")


def test_each_reminder_gets_its_own_envelope_sender_and_back() -> None:
    sender = ADDRESS.for_reminder(1234)
    assert sender.startswith("bounces+r1234-") and sender.endswith("@mail.clinic.example")
    assert ADDRESS.reminder_of(sender) == 1234
    assert ADDRESS.reminder_of(f"<{sender.upper()}>") == 1234  # mail systems may change case
    assert ADDRESS.for_reminder(1235) != sender.replace("1234", "1235")  # the tag is per id


@pytest.mark.parametrize(
    "recipient",
    [
        "bounces+r1234-0000000000@mail.clinic.example",  # a guessed id with a made-up tag
        "bounces@mail.clinic.example",  # no tag
        "postmaster@mail.clinic.example",
        "bounces+r1234-{tag}@elsewhere.example",  # our tag, another domain
        "other+r1234-{tag}@mail.clinic.example",
    ],
)
def test_addresses_that_are_not_ours_or_are_forged_name_no_reminder(recipient: str) -> None:
    tag = ADDRESS.for_reminder(1234).split("-", 1)[1].split("@")[0]
    assert ADDRESS.reminder_of(recipient.format(tag=tag)) is None


def test_another_secret_does_not_accept_the_tag() -> None:
    other = BounceAddress("bounces@mail.clinic.example", b"another secret, also 32 bytes...")
    assert other.reminder_of(ADDRESS.for_reminder(7)) is None


def test_a_postfix_bounce_for_an_unknown_mailbox_is_permanent() -> None:
    reports = read_dsn((FIXTURES / "postfix-user-unknown.eml").read_bytes())
    assert reports == [DeliveryReport("failed", "5.1.1", "no.such.patient@example.net")]
    assert reports[0].permanent


def test_a_delay_notice_is_not_permanent() -> None:
    reports = read_dsn((FIXTURES / "postfix-delayed.eml").read_bytes())
    assert reports is not None
    assert [(r.action, r.status, r.permanent) for r in reports] == [("delayed", "4.4.1", False)]


def test_folded_fields_are_read_and_a_report_needs_its_status_part() -> None:
    raw = (FIXTURES / "postfix-user-unknown.eml").read_bytes()
    as_text = raw.replace(b"Content-Type: message/delivery-status", b"Content-Type: text/plain")
    assert read_dsn(as_text) is None  # not a delivery-status part: not a DSN
    folded = raw.replace(b"Status: 5.1.1", b"Status:\r\n 5.2.2")
    reports = read_dsn(folded)
    assert reports is not None and reports[0].status == "5.2.2"


@pytest.mark.parametrize(
    "raw",
    [
        b"From: patient@example.net\r\nSubject: Out of office\r\n\r\nI am away until Monday.\r\n",
        b"Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n"
        b"\r\n--x\r\nContent-Type: text/plain\r\n\r\nRead receipt\r\n--x--\r\n",
        b"",
    ],
)
def test_anything_else_is_not_a_bounce(raw: bytes) -> None:
    assert read_dsn(raw) is None
