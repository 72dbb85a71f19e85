"""List-Unsubscribe tokens and links (channels/unsubscribe.py): which links an email carries
under which settings, and that a token is tied to its patient, address and secret."""

from __future__ import annotations

import pytest

from reminder_service.channels.bounces import BounceAddress
from reminder_service.channels.unsubscribe import UnsubscribeLinks, UnsubscribeTokens

TOKENS = UnsubscribeTokens(b"s" * 32)
ADDRESS = "Test.Patient@example.org"
FROM = "haematology@riverside.example.org"
PUBLIC = "https://reminders.example.org"
BOUNCES = BounceAddress("bounces@mail.clinic.example", b"b" * 32)


def test_a_token_verifies_for_its_patient_and_address_only() -> None:
    token = UnsubscribeTokens.read(TOKENS.token(42, ADDRESS))
    assert token is not None and token.patient_id == 42
    assert TOKENS.verify(token, ADDRESS)
    assert TOKENS.verify(token, "test.patient@EXAMPLE.org")  # case is not a different address
    assert not TOKENS.verify(token, "someone.else@example.org")
    assert not UnsubscribeTokens(b"t" * 32).verify(token, ADDRESS)
    other = UnsubscribeTokens.read(TOKENS.token(43, ADDRESS))
    assert other is not None and other.mac != token.mac
    # Another patient's MAC under this patient's id: refused.
    assert not TOKENS.verify(type(token)(42, other.mac), ADDRESS)


@pytest.mark.parametrize(
    "text",
    ["", "42", "42-", "-" + "a" * 24, "0-" + "a" * 24, "42-" + "a" * 23, "42-" + "g" * 24,
     "4294967296-" + "a" * 24, "42-" + "a" * 24 + "/x", "٤٢-" + "a" * 24],
)  # fmt: skip
def test_garbage_is_no_token(text: str) -> None:
    assert UnsubscribeTokens.read(text) is None


def test_with_a_secret_and_an_https_public_url_both_links_are_offered() -> None:
    links = UnsubscribeLinks(TOKENS, public_url=PUBLIC + "/").for_patient(42, ADDRESS, FROM)
    token = TOKENS.token(42, ADDRESS)
    assert links.one_click == f"{PUBLIC}/unsubscribe/{token}"
    assert links.mailto == f"mailto:{FROM}?subject=unsubscribe"


@pytest.mark.parametrize(
    "links",
    [
        UnsubscribeLinks(None, public_url=PUBLIC),  # no secret
        UnsubscribeLinks(TOKENS, public_url="http://reminders.example.org"),  # not https
        UnsubscribeLinks(TOKENS),  # no public URL
    ],
)
def test_otherwise_only_the_mailto(links: UnsubscribeLinks) -> None:
    made = links.for_patient(42, ADDRESS, FROM)
    assert (made.mailto, made.one_click) == (f"mailto:{FROM}?subject=unsubscribe", "")


def test_the_mailto_goes_to_the_staff_mailbox_when_one_is_set() -> None:
    links = UnsubscribeLinks(None, mailbox="unsubscribe@riverside.example.org")
    made = links.for_patient(42, ADDRESS, FROM)
    assert made.mailto == "mailto:unsubscribe@riverside.example.org?subject=unsubscribe"


def test_a_non_ascii_from_address_is_percent_encoded_in_the_mailto() -> None:
    made = UnsubscribeLinks(None).for_patient(42, ADDRESS, "clínica@example.org")
    assert made.mailto == "mailto:cl%C3%ADnica@example.org?subject=unsubscribe"


def test_the_bounce_listener_reads_the_mailto_tag_when_it_reads_mail() -> None:
    links = UnsubscribeLinks(TOKENS, inbound=BOUNCES, mailbox="staff@example.org")
    made = links.for_patient(42, ADDRESS, FROM)
    token = TOKENS.token(42, ADDRESS)
    assert made.mailto == f"mailto:bounces+u{token}@mail.clinic.example?subject=unsubscribe"
    recipient = made.mailto.removeprefix("mailto:").split("?")[0]
    assert links.token_in(recipient) == token
    assert links.token_in(f"<{recipient.upper()}>") == token  # a relay may change the case
    assert links.token_in("bounces+r12-0123456789@mail.clinic.example") is None  # a bounce tag
    assert links.token_in(f"bounces+u{token}@other.example") is None
    assert links.token_in("bounces+ugarbage@mail.clinic.example") is None


def test_a_bounce_address_too_long_for_a_tag_falls_back_to_the_mailbox() -> None:
    long_local = BounceAddress("b" * 40 + "@mail.clinic.example", b"b" * 32)
    links = UnsubscribeLinks(TOKENS, inbound=long_local, mailbox="staff@example.org")
    assert (
        links.for_patient(42, ADDRESS, FROM).mailto
        == "mailto:staff@example.org?subject=unsubscribe"
    )
