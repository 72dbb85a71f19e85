"""`reminder-service replies` and `confirm` as real processes: staff read replies with the number
and text to call back on, filter them, mark one handled with who and when, and confirm an
appointment taken by phone; preview then shows who confirmed it."""

from __future__ import annotations

import json
import os
from itertools import count
from pathlib import Path

import pytest

from reminder_service.bootstrap import Service
from tests.factories import CONFIG_DIR, TEMPLATES_DIR, appointment, local, patient, run_cli

pytestmark = pytest.mark.slow
SIDS = count(1)


@pytest.fixture
def env(service: Service, database_url: str, tmp_path: Path, clock) -> dict[str, str]:  # type: ignore[no-untyped-def]
    lake = patient(external_id="PL", first_name="Lake", last_name="Side",
                   mobile="+447700900150", timezone="America/Chicago")  # fmt: skip
    service.importer.apply(
        [(2, appointment()),
         (3, appointment(external_id="L1", clinic_id="lakeside", patient=lake,
                         start=local("America/Chicago", 2026, 12, 10, 9, 0)))],
        source="t", label="t",
    )  # fmt: skip
    for phone, body in [("+447700900123", "Can I bring my daughter?\n\x1b[31mThanks"),
                        ("+447700900123", "STOP"), ("+447700900150", "2")]:  # fmt: skip
        service.replies.handle(f"SM{next(SIDS):032d}", phone, body)
        clock.advance(minutes=1)
    return {
        **os.environ,
        "REMINDER_DATABASE_URL": database_url,
        "REMINDER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_LOG_LEVEL": "DEBUG",
    }


def test_staff_list_replies_and_mark_one_handled(env) -> None:  # type: ignore[no-untyped-def]
    listed = run_cli(env, "replies")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.index("from +447700900150") < listed.stdout.index("STOP")
    assert "from +447700900123  [riverside] other, answered acknowledged; appointment A1 " \
           "(patient P1, Test Patient); UNHANDLED" in listed.stdout  # fmt: skip
    # The text is shown indented, line by line, with the escape character made harmless.
    assert "    Can I bring my daughter?\n    \ufffd[31mThanks" in listed.stdout
    assert "\x1b" not in listed.stdout
    assert "handled by automatic" in listed.stdout  # STOP

    waiting = json.loads(run_cli(env, "replies", "--unhandled", "--json").stdout)
    assert [r["kind"] for r in waiting] == ["new_time", "other"]
    lakeside = json.loads(run_cli(env, "replies", "--clinic", "lakeside", "--json").stdout)
    assert [r["appointment_id"] for r in lakeside] == ["L1"]
    unknown = run_cli(env, "replies", "--clinic", "nowhere")
    assert unknown.returncode == 2 and "no clinic 'nowhere'" in unknown.stderr

    reply_id = str(waiting[1]["id"])
    handled = run_cli(env, "replies", "--handle", reply_id, "--by", "nurse.jones")
    assert handled.returncode == 0, handled.stderr
    assert f"reply {reply_id}: handled by nurse.jones at " in handled.stdout
    again = run_cli(env, "replies", "--handle", reply_id, "--by", "someone.else")
    assert "already handled by nurse.jones" in again.stdout
    left = json.loads(run_cli(env, "replies", "--unhandled", "--json").stdout)
    assert [r["kind"] for r in left] == ["new_time"]
    missing = run_cli(env, "replies", "--handle", "999")
    assert missing.returncode == 2 and "no reply with id 999" in missing.stderr
    # Logs (stderr, at DEBUG) never carry a number or a message.
    for run in (listed, handled, missing):
        assert "900123" not in run.stderr and "daughter" not in run.stderr


def test_staff_confirm_an_appointment_and_preview_says_who(env) -> None:  # type: ignore[no-untyped-def]
    before = run_cli(env, "preview", "A1")
    assert "Not confirmed yet: confirmation required by 2026-12-08T09:30:00+00:00" in before.stdout
    confirmed = run_cli(env, "confirm", "A1", "--by", "nurse.jones")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "appointment A1: confirmed by nurse.jones at " in confirmed.stdout
    assert "Confirmed by nurse.jones at " in run_cli(env, "preview", "A1").stdout
    nope = run_cli(env, "confirm", "NOPE")
    assert nope.returncode == 2 and "no appointment with id 'NOPE'" in nope.stderr
