"""Email throughput through SmtpEmailChannel, with connection reuse and with a connection per email.

The mail server is aiosmtpd (tests/servers/smtp_server.py) in its own process, plain SMTP on
127.0.0.1, counting what it receives. The emails are realistic: multipart/alternative with a
reminder-length text and HTML body (about 4.5 KB), half of them with a calendar invitation (.ics)
in multipart/mixed. The channel writes each to MIME and sends it, as for the dispatcher; the
client and the server each have a process (and, on 2 cores, a core).

- reuse: one channel with SMTP_CONNECTIONS (default 4) kept open, all emails handed to it at once
  (it keeps at most that many in flight);
- a connection per email, for contrast: the same number of emails in flight, but each on a new
  channel that connects, sends one email and QUITs;
- textbook, for contrast: smtplib, one email after another, each on its own connection (the same
  MIME bytes, so only the sending differs); a sample (`--textbook-emails`).

Each run reports the CPU time of this process (the client: building MIME and speaking SMTP) and of
the server's, per email: the server's shows whether it, not the client, is what limits a run.
The server's counts are checked against what was sent (every email accepted once; the reuse run
used no more connections than configured).

Target (issue 6): at least 500 emails/s with connection reuse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import smtplib
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reminder_service.channels.base import CalendarEvent, OutgoingEmail  # noqa: E402
from reminder_service.channels.email_mime import render_mime  # noqa: E402
from reminder_service.channels.smtp_email import SmtpEmailChannel  # noqa: E402
from reminder_service.settings import SmtpSettings  # noqa: E402
from tests.servers.smtp_server import ServerProcess, serve_in_process  # noqa: E402

TARGET_PER_SECOND = 500.0
SENT_AT = datetime(2026, 11, 19, 11, 0, tzinfo=UTC)

TEXT = """Hello Test Patient,

Your appointment with Riverside Haematology is booked.

- Date: Wednesday 9 December
- Time: 09:30
- Place: Treatment Room 4
- Address: Day Unit, Level 2, Riverside Hospital, London SE1 7XX

To change your appointment, call 020 7946 0123.

BEFORE YOU COME

Follow the plan your care team gave you for your medicines. No plan yet? Call 020 7946 0123
today. Do not stop or change a medicine unless your care team has told you to.

Bring a list of every medicine you take, including ones you buy yourself, and something to
read: you may be with us for an hour or more.

If you are having sedation, an adult must take you home and stay with you overnight.

AFTER YOUR APPOINTMENT

Keep the dressing dry for 24 hours. Some aching is normal for a few days; take the pain relief
your care team suggested. Call us if the site bleeds through the dressing, or becomes red, hot or
swollen, or if you have a temperature of 38 C or more.

Riverside Haematology
020 7946 0123 (Monday to Friday, 8:30 to 17:00)
"""


def html_of(text: str) -> str:
    paragraphs = "".join(
        f'<p style="margin:0 0 12px 0;font-family:Arial,sans-serif;font-size:16px;'
        f'line-height:24px;color:#222222">{block.replace(chr(10), "<br>")}</p>'
        for block in text.split("\n\n")
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width"><title>Your appointment</title>'
        '</head><body style="margin:0;padding:0;background:#f4f4f4">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td>'
        '<table role="presentation" width="600" align="center" cellpadding="24" '
        'style="background:#ffffff">'
        f"<tr><td>{paragraphs}</td></tr></table></td></tr></table></body></html>"
    )


def emails(count: int) -> list[OutgoingEmail]:
    html = html_of(TEXT)
    start = datetime(2026, 12, 9, 9, 30, tzinfo=UTC)
    out = []
    for number in range(1, count + 1):
        calendar = None
        if number % 2 == 0:
            calendar = CalendarEvent(
                uid=f"appointment-A{number}@reminder-service",
                sequence=number % 3,
                start=start,
                end=start + timedelta(minutes=90),
                summary="Your appointment at Riverside Haematology",
                location="Riverside Hospital, Day Unit, Level 2",
                organizer="reminders@example.org",
            )
        out.append(
            OutgoingEmail(
                reminder_id=number,
                appointment_id=f"A{number}",
                step="booked",
                to=f"test.patient{number}@example.org",
                from_name="Riverside Haematology",
                subject="Your appointment on Wednesday 9 December",
                text=TEXT,
                html=html,
                message_id=f"<reminder-{number}.v1@reminder-service>",
                sent_at=SENT_AT,
                calendar=calendar,
            )
        )
    return out


async def send_reusing(settings: SmtpSettings, messages: list[OutgoingEmail]) -> None:
    channel = SmtpEmailChannel(settings)
    try:
        await asyncio.gather(*(channel.send_email(message) for message in messages))
    finally:
        await channel.aclose()


async def send_connection_per_email(
    settings: SmtpSettings, messages: list[OutgoingEmail], in_flight: int
) -> None:
    slots = asyncio.Semaphore(in_flight)

    async def one(message: OutgoingEmail) -> None:
        async with slots:
            channel = SmtpEmailChannel(replace(settings, connections=1))
            try:
                await channel.send_email(message)
            finally:
                await channel.aclose()

    await asyncio.gather(*(one(message) for message in messages))


def send_textbook(settings: SmtpSettings, messages: list[OutgoingEmail]) -> None:
    """What a first version would do: smtplib, a connection per email, one at a time."""
    for message in messages:
        data = render_mime(message, settings.from_)
        with smtplib.SMTP(settings.host, settings.effective_port, timeout=30) as smtp:
            smtp.sendmail(settings.from_, [message.to], data)


def measure(server: ServerProcess, count: int, run: Callable[[], object]) -> dict[str, Any]:
    """Runs `run` (sending `count` emails): wall time, this process's CPU, and what the server
    counted and spent meanwhile."""
    before = server.stats()
    cpu, started = time.process_time(), time.perf_counter()
    run()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = server.stats()
    server_cpu = after["cpu_seconds"] - before["cpu_seconds"]
    return {
        "emails": count,
        "seconds": seconds,
        "emails_per_second": count / seconds,
        "cpu_ms_per_email": 1000 * cpu / count,
        "server_cpu_ms_per_email": 1000 * server_cpu / count,
        "server_messages": after["messages"] - before["messages"],
        "server_connections": after["connections"] - before["connections"],
        "server_bytes": after["bytes"] - before["bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=SmtpSettings().connections)
    parser.add_argument(
        "--per-email-emails",
        type=int,
        default=None,
        help="emails for the connection-per-email run (default: the same as --emails)",
    )
    parser.add_argument(
        "--textbook-emails", type=int, default=1_000, help="emails for the smtplib run"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "email_send.json")
    args = parser.parse_args()
    per_email_count = args.per_email_emails or args.emails

    messages = emails(max(args.emails, per_email_count, args.textbook_emails))
    with_ics = sum(1 for m in messages[: args.emails] if m.calendar is not None)
    sizes = [len(render_mime(m, "reminders@example.org")) for m in messages[:2]]

    load_before = os.getloadavg()[0]  # the figures depend on what else the machine runs
    with serve_in_process() as server:
        settings = server.settings(connections=args.connections)
        reuse = measure(
            server,
            args.emails,
            lambda: asyncio.run(send_reusing(settings, messages[: args.emails])),
        )
        per_email = measure(
            server,
            per_email_count,
            lambda: asyncio.run(
                send_connection_per_email(settings, messages[:per_email_count], args.connections)
            ),
        )
        textbook = measure(
            server,
            args.textbook_emails,
            lambda: send_textbook(settings, messages[: args.textbook_emails]),
        )

    load_after = os.getloadavg()[0]
    assert reuse["server_messages"] == args.emails, reuse
    assert reuse["server_connections"] <= args.connections, reuse
    assert per_email["server_messages"] == per_email_count, per_email
    assert per_email["server_connections"] == per_email_count, per_email
    assert textbook["server_messages"] == args.textbook_emails, textbook
    ours = reuse["emails_per_second"]
    speedup = ours / per_email["emails_per_second"]
    over_textbook = ours / textbook["emails_per_second"]
    report = {
        "cores": os.cpu_count(),
        "load_average": [load_before, load_after],
        "emails": args.emails,
        "with_ics": with_ics,
        "email_bytes": {"without_ics": sizes[0], "with_ics": sizes[1]},
        "connections": args.connections,
        "reuse": reuse,
        "connection_per_email": per_email,
        "textbook_smtplib": textbook,
        "speedup": speedup,
        "speedup_over_textbook": over_textbook,
        "target_emails_per_second": TARGET_PER_SECOND,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))

    print(
        f"email send, {args.emails:,} emails ({with_ics:,} with an .ics; {sizes[0]:,} / "
        f"{sizes[1]:,} bytes), aiosmtpd in another process, {os.cpu_count()} cores, "
        f"load average {load_before:.1f} before, {load_after:.1f} after"
    )
    print(f"  {'':36} {'':>6} {'':>6} {'':>9} {'CPU ms per email':>21}")
    print(f"  {'':36} {'emails':>6} {'s':>6} {'emails/s':>9} {'ours':>13} {'server':>7}")
    for label, run, note in (
        (f"ours: {args.connections} reused connections", reuse, ""),
        (
            "ours, a connection per email",
            per_email,
            f"{args.connections} at a time",
        ),
        ("textbook: smtplib, one by one", textbook, "a connection each"),
    ):
        print(
            f"  {label:36} {run['emails']:6,} {run['seconds']:6.2f} "
            f"{run['emails_per_second']:9,.0f} {run['cpu_ms_per_email']:13.3f} "
            f"{run['server_cpu_ms_per_email']:7.3f}  "
            f"{run['server_connections']:,} server connections{', ' + note if note else ''}"
        )
    verdict = "met" if ours >= TARGET_PER_SECOND else "MISSED"
    print(
        f"  ours is {speedup:.1f}x a connection per email and {over_textbook:.1f}x the textbook; "
        f"target >= {TARGET_PER_SECOND:.0f} emails/s: {ours:,.0f}, {verdict}"
    )


if __name__ == "__main__":
    main()
