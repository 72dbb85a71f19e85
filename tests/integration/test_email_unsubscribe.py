"""List-Unsubscribe end to end: emails go through the real SMTP channel to a local server, from
the clinic's named sender; the one-click link they carry is POSTed to the real HTTP app and
stops the next email while texts go on; a GET changes nothing; bad tokens get a clear 400/404;
an unsubscribe email to the bounce listener is honoured as well."""

from __future__ import annotations

import re
import shutil
import smtplib
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from icalendar import Calendar
from sqlalchemy import select, update

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.entrypoints.bounce_listener import BounceListener
from reminder_service.settings import Settings
from reminder_service.store.tables import email_opt_outs, patients, reminders
from tests.factories import CONFIG_DIR, appointment, listening_on_a_thread, patient
from tests.servers.smtp_server import SmtpServer, serve_in_thread

PUBLIC = "https://reminders.example.org"
SECRET = "unsubscribe-secret-" + "x" * 16
CLINIC_FROM = "haematology@riverside.example.org"
CLINIC_NAME = "Clínica Riverside, Día"  # non-ASCII and a comma: encoded, never mangled
BOUNCES = "bounces@mail.clinic.example"
PATIENT_EMAIL = "test.patient@example.org"


def clinic_config(tmp_path: Path) -> Path:
    """The shipped configuration with caps off (a reschedule texts again the same day) and
    Riverside sending from its own named address."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    clinics = config / "clinics.yaml"
    text = clinics.read_text().replace(
        "sms_caps: {per_day: 1, per_7_days: 3}", "sms_caps: {per_day: 0, per_7_days: 0}"
    )
    text = text.replace(
        "    name: Riverside Haematology ",
        f"    email_from: {CLINIC_FROM}\n    name: {CLINIC_NAME} ",
    )
    clinics.write_text(text)
    return config


@pytest.fixture
def mail_server() -> Iterator[SmtpServer]:
    with serve_in_thread() as server:
        yield server


def build(  # type: ignore[no-untyped-def]
    settings: Settings, clock, mail_server: SmtpServer, tmp_path: Path, smtp=None, **changes
) -> Service:
    configured = replace(
        settings,
        email_channel="smtp",
        smtp=mail_server.settings(**(smtp or {})),
        public_url=PUBLIC,
        unsubscribe_secret=SECRET,
        config_dir=clinic_config(tmp_path),
    )
    return bootstrap.build(replace(configured, **changes), clock)


@pytest.fixture
def smtp_service(  # type: ignore[no-untyped-def]
    settings: Settings, clock, mail_server: SmtpServer, tmp_path: Path
) -> Iterator[Service]:
    service = build(settings, clock, mail_server, tmp_path)
    yield service
    service.close()


def book(service: Service, **changes: object) -> None:
    service.importer.apply([(2, appointment(**changes))], source="t", label="t")
    service.dispatcher.dispatch_due()


def last_email(mail_server: SmtpServer) -> tuple[str, EmailMessage]:
    received = mail_server.handler.received[-1]
    return received.mail_from, received.message()


def list_unsubscribe(message: EmailMessage) -> list[str]:
    return re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))


def one_click_path(message: EmailMessage) -> str:
    [url] = [u for u in list_unsubscribe(message) if u.startswith("https://")]
    assert url.startswith(f"{PUBLIC}/unsubscribe/")
    return urlsplit(url).path


def opted_out(service: Service) -> list[str]:
    with service.engine.connect() as conn:
        return list(conn.execute(select(email_opt_outs.c.email)).scalars())


def statuses(service: Service, channel: str) -> list[tuple[str, str]]:
    with service.engine.connect() as conn:
        query = (
            select(reminders.c.status, reminders.c.reason)
            .where(reminders.c.channel == channel, reminders.c.step_id == "booked")
            .order_by(reminders.c.id)
        )
        return [(s, r) for s, r in conn.execute(query).all()]


def test_a_patient_email_comes_from_the_clinic_and_carries_both_unsubscribe_links(
    smtp_service: Service, mail_server: SmtpServer
) -> None:
    book(smtp_service)
    envelope_sender, message = last_email(mail_server)

    [(name, address)] = getaddresses([str(message["From"])])
    assert (name, address) == (CLINIC_NAME, CLINIC_FROM)
    assert "=?utf-8?" in mail_server.handler.received[-1].data.split(b"\r\n\r\n")[0].decode()
    assert envelope_sender == CLINIC_FROM  # no bounce address: the From, so SPF aligns
    mailto, url = list_unsubscribe(message)
    assert mailto == f"mailto:{CLINIC_FROM}?subject=unsubscribe"  # staff read it
    assert re.fullmatch(rf"{PUBLIC}/unsubscribe/\d+-[0-9a-f]{{24}}", url)
    assert PATIENT_EMAIL not in url
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The booking's calendar entry: the clinic organizes, the patient attends.
    [invite] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    [event] = Calendar.from_ical(invite.get_content()).walk("VEVENT")
    assert str(event["ORGANIZER"]) == f"mailto:{CLINIC_FROM}"
    assert event["ORGANIZER"].params["CN"] == CLINIC_NAME
    assert str(event["ATTENDEE"]) == f"mailto:{PATIENT_EMAIL}"
    assert event["ATTENDEE"].params["CN"] == "Test Patient"


def test_without_a_secret_only_the_mailto_is_offered(  # type: ignore[no-untyped-def]
    settings: Settings, clock, mail_server: SmtpServer, tmp_path: Path
) -> None:
    service = build(settings, clock, mail_server, tmp_path, unsubscribe_secret="",
                    unsubscribe_mailbox="unsubscribe@riverside.example.org")  # fmt: skip
    try:
        book(service)
    finally:
        service.close()
    _, message = last_email(mail_server)
    mailbox = "mailto:unsubscribe@riverside.example.org?subject=unsubscribe"
    assert list_unsubscribe(message) == [mailbox]
    assert message["List-Unsubscribe-Post"] is None


def test_an_http_public_url_offers_no_one_click(  # type: ignore[no-untyped-def]
    settings: Settings, clock, mail_server: SmtpServer, tmp_path: Path
) -> None:
    service = build(settings, clock, mail_server, tmp_path, public_url="http://10.0.0.5:8080")
    try:
        book(service)
    finally:
        service.close()
    _, message = last_email(mail_server)
    assert list_unsubscribe(message) == [f"mailto:{CLINIC_FROM}?subject=unsubscribe"]
    assert message["List-Unsubscribe-Post"] is None


def test_an_unsubscribed_patient_with_no_other_channel_is_reported_to_staff_without_a_link(
    smtp_service: Service, mail_server: SmtpServer
) -> None:
    smtp_service.email_opt_outs().opt_out(PATIENT_EMAIL)
    book(smtp_service, patient=patient(mobile=None))
    smtp_service.dispatcher.dispatch_due()  # the staff alert planned by the first pass
    [received] = mail_server.handler.received
    alert = received.message()
    assert alert["To"] == "haematology.bookings@example.org"
    assert alert["List-Unsubscribe"] is None
    assert "unsubscribed" in alert.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_one_click_stops_the_next_email_and_texts_go_on(
    smtp_service: Service, mail_server: SmtpServer, clock
) -> None:  # type: ignore[no-untyped-def]
    book(smtp_service)
    path = one_click_path(last_email(mail_server)[1])
    client = TestClient(smtp_service.http_app())

    page = client.get(path)  # a mail scanner following the link
    assert page.status_code == 200 and 'method="post"' in page.text
    assert opted_out(smtp_service) == []

    answer = client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200 and "no more" in answer.text
    assert opted_out(smtp_service) == [PATIENT_EMAIL]
    assert client.post(path, content=b"List-Unsubscribe=One-Click").status_code == 200  # again

    # A reschedule: a new booking message by SMS and by email.
    sent_before = len(mail_server.handler.received)
    clock.advance(hours=1)
    book(smtp_service, start=appointment().start + timedelta(days=1))
    assert len(mail_server.handler.received) == sent_before  # no email went
    assert statuses(smtp_service, "email")[-1] == (
        "skipped", "the address has unsubscribed from email"
    )  # fmt: skip
    assert statuses(smtp_service, "sms")[-1] == ("sent", "sent")
    sms_files = list((smtp_service.settings.outbox_dir / "sms").glob("*.json"))
    assert len(sms_files) == 2


def test_an_address_differing_only_in_case_is_the_same_opt_out(
    smtp_service: Service, mail_server: SmtpServer, clock
) -> None:  # type: ignore[no-untyped-def]
    smtp_service.email_opt_outs().opt_out("Test.Patient@Example.org")
    book(smtp_service)
    assert mail_server.handler.received == []
    assert statuses(smtp_service, "email") == [
        ("skipped", "the address has unsubscribed from email")
    ]


@pytest.mark.parametrize(
    ("token", "status"),
    [
        ("garbage", 400),
        ("1-" + "0" * 23, 400),  # one hex digit short
        ("99999999999-" + "0" * 24, 400),  # past the integer range: no patient of ours
        ("1-" + "0" * 24, 404),  # well-formed, not signed here
        ("%00", 400),
        ("x" * 5000, 400),
    ],
)
def test_bad_tokens_are_a_clear_400_or_404_and_change_nothing(
    smtp_service: Service, token: str, status: int
) -> None:
    book(smtp_service)
    client = TestClient(smtp_service.http_app())
    for method in (client.get, client.post):
        answer = method(f"/unsubscribe/{token}")
        assert answer.status_code == status
        assert "unsubscribe" in answer.text.lower()
    assert opted_out(smtp_service) == []


def test_a_token_for_an_address_no_longer_on_record_is_404(
    smtp_service: Service, mail_server: SmtpServer
) -> None:
    book(smtp_service)
    path = one_click_path(last_email(mail_server)[1])
    with smtp_service.engine.begin() as conn:
        conn.execute(update(patients).values(email="new.address@example.org"))
    answer = TestClient(smtp_service.http_app()).post(path)
    assert answer.status_code == 404 and "no longer on record" in answer.text
    assert opted_out(smtp_service) == []


def test_a_token_from_another_secret_is_404(  # type: ignore[no-untyped-def]
    smtp_service: Service, mail_server: SmtpServer, clock
) -> None:
    book(smtp_service)
    path = one_click_path(last_email(mail_server)[1])
    other = bootstrap.build(
        replace(smtp_service.settings, unsubscribe_secret="another-" * 4), clock
    )
    try:
        assert TestClient(other.http_app()).post(path).status_code == 404
        without = bootstrap.build(replace(smtp_service.settings, unsubscribe_secret=""), clock)
        answer = TestClient(without.http_app()).post(path)
        assert answer.status_code == 404 and "not enabled" in answer.text
        without.close()
    finally:
        other.close()
    assert opted_out(smtp_service) == []


def test_an_oversized_post_is_413(smtp_service: Service, mail_server: SmtpServer) -> None:
    book(smtp_service)
    path = one_click_path(last_email(mail_server)[1])
    answer = TestClient(smtp_service.http_app()).post(path, content=b"x" * 10_000)
    assert answer.status_code == 413
    assert opted_out(smtp_service) == []


# -- the mailto, read by the bounce listener ----------------------------------------------------


@pytest.fixture
def listening_service(  # type: ignore[no-untyped-def]
    settings: Settings, clock, mail_server: SmtpServer, tmp_path: Path
) -> Iterator[tuple[Service, int]]:
    smtp = {"bounce_address": BOUNCES, "bounce_secret": "b" * 32}
    service = build(settings, clock, mail_server, tmp_path, smtp=smtp)
    receiver = service.bounces()
    assert receiver is not None
    with listening_on_a_thread(BounceListener(receiver.receive, "127.0.0.1", 0)) as port:
        yield service, port
    service.close()


def mail_to(port: int, recipient: str) -> None:
    message = EmailMessage()
    message["From"] = PATIENT_EMAIL
    message["To"] = recipient
    message["Subject"] = "unsubscribe"
    message.set_content("This message was automatically generated by a mail client.")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(message, from_addr=PATIENT_EMAIL, to_addrs=[recipient])


def test_an_email_to_the_mailto_is_honoured_by_the_bounce_listener(
    listening_service: tuple[Service, int], mail_server: SmtpServer
) -> None:
    service, port = listening_service
    book(service)
    mailto = list_unsubscribe(last_email(mail_server)[1])[0]
    recipient = mailto.removeprefix("mailto:").split("?")[0]
    assert re.fullmatch(r"bounces\+u\d+-[0-9a-f]{24}@mail\.clinic\.example", recipient)

    forged = re.sub(r"-[0-9a-f]{24}@", "-" + "0" * 24 + "@", recipient)
    mail_to(port, forged)
    assert opted_out(service) == []
    mail_to(port, recipient)
    assert opted_out(service) == [PATIENT_EMAIL]
