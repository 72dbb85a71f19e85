"""The real command line in subprocesses: import, preview, status, check-config, run, crash."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select

from bench.generate_appointments import HEADERS, changes, generate, write_csv
from reminder_service.configuration.clinics import load_clinics
from reminder_service.entrypoints.sample_data import daytime_zone
from reminder_service.store.tables import api_keys, audit_log, reminders
from tests.factories import CONFIG_DIR, ROOT, TEMPLATES_DIR, free_port, migrated, run_cli
from tests.servers.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    Behaviour,
    post_status_callback,
    serve_in_thread,
    sign_callback,
    status_callback_params,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REMINDER_DATABASE_URL": migrated(f"sqlite:///{tmp_path / 'var' / 'reminders.db'}"),
        "REMINDER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_LEASE_SECONDS": "2",
        "REMINDER_LOG_LEVEL": "WARNING",
        "REMINDER_HTTP_PORT": str(free_port()),
    }


cli = run_cli


def test_check_config_says_ok_or_names_the_problem(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ok = cli(env, "check-config")
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok")
    broken = tmp_path / "config"
    (broken / "protocols").mkdir(parents=True)
    (broken / "clinics.yaml").write_text((CONFIG_DIR / "clinics.yaml").read_text())
    text = (CONFIG_DIR / "protocols" / "bone_marrow_biopsy.yaml").read_text()
    (broken / "protocols" / "p.yaml").write_text(
        text.replace("7 days before start", "7 dayz before start")
    )
    bad = cli({**env, "REMINDER_CONFIG_DIR": str(broken)}, "check-config")
    assert bad.returncode == 2
    assert "p.yaml: step 'medicines': field 'send_at':" in bad.stderr
    run = cli({**env, "REMINDER_CONFIG_DIR": str(broken)}, "run")
    assert run.returncode == 2 and "field 'send_at'" in run.stderr  # refuses to start


def test_import_summary_reimport_and_changes(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows, expected, bad = generate(3000, seed=11, today=datetime.now(UTC).date())
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    write_csv(first, rows, excel=True)  # BOM, CRLF and ';' as Excel writes them
    changed, expected_changes = changes(rows, seed=11, bad=bad)
    write_csv(second, changed, excel=False)

    result = cli(env, "import", str(first), "--errors-csv", str(tmp_path / "errors.csv"))
    assert result.returncode == 1, result.stderr  # some rows were rejected
    counts = _summary(result.stdout)
    # A cancelled row for an appointment never seen is reported apart, not as a cancellation.
    wanted = ("imported", "cancelled", "cancel not found", "not served", "rejected")
    assert {k: counts[k] for k in wanted} == {
        "imported": expected.imported, "cancelled": 0, "cancel not found": expected.cancelled,
        "not served": expected.not_served, "rejected": expected.rejected,
    }  # fmt: skip
    with (tmp_path / "errors.csv").open() as handle:
        errors = list(csv.DictReader(handle))
    assert len({e["line"] for e in errors}) == expected.rejected
    assert all("@" not in e["reason"] for e in errors)  # no patient data in error text

    again = _summary(cli(env, "import", str(first)).stdout)
    assert again["unchanged"] == 3000 - expected.rejected
    assert again["imported"] == again["reminders planned"] == 0

    after = _summary(cli(env, "import", str(second)).stdout)
    assert after["rescheduled"] == expected_changes.rescheduled
    assert after["cancelled"] == expected_changes.cancelled
    assert after["unchanged"] == expected_changes.unchanged


def _summary(stdout: str) -> dict[str, int]:
    counts = {}
    for line in stdout.splitlines():
        parts = [p.strip() for p in line.strip("│┃ ").split("│")]
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_unreadable_file_is_rejected_whole(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "latin.csv"
    path.write_bytes(
        ",".join(HEADERS).encode()
        + b"\nA1,P1,Jos\xe9,Test,,x@example.org,,,BMBX,2027-01-05 09:00,60,,,,booked\n"
    )
    result = cli(env, "import", str(path))
    assert result.returncode == 2
    assert "latin.csv" in result.stderr and "nothing imported" in result.stderr
    status = json.loads(cli(env, "status", "--json").stdout)
    assert sum(status["reminders_by_status"].values()) == 0


def test_preview_json_gives_local_times_across_dst(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Monday 15 March 2027, the day after New York springs forward; the patient is in New York.
    path = tmp_path / "one.csv"
    values = ["DST1", "P1", "Test", "Patient", "(212) 555-0142", "t@example.org", "en-US",
              "America/New_York", "BMBX", "2027-03-15 09:30", "60", "Room 4", "yes", "unknown",
              "booked"]  # fmt: skip
    row = dict(zip(HEADERS, values, strict=True))
    write_csv(path, [row], excel=False)
    assert cli(env, "import", str(path)).returncode == 0
    lines = json.loads(cli(env, "preview", "DST1", "--json").stdout)
    due = {(line["step"], line["channel"]): line for line in lines}
    assert due[("medicines", "sms")]["due_at"] == "2027-03-08T10:00:00-05:00"
    assert due[("escort", "sms")]["due_at"] == "2027-03-13T10:00:00-05:00"
    assert due[("day_before", "sms")]["due_at"] == "2027-03-14T18:00:00-04:00"  # after the change
    assert due[("after_care", "sms")]["due_at"] == "2027-03-15T12:30:00-04:00"
    assert due[("morning_of", "email")]["status"] == "disabled"
    sms = due[("day_before", "sms")]
    assert (
        sms["status"] == "pending" and "9:30" in sms["body"] and sms["reason"].startswith("planned")
    )
    assert {"step", "channel", "due_at", "status", "body", "reason"} <= set(sms)


@pytest.fixture
def daytime_rows() -> Iterator[list[dict[str, str]]]:
    """Appointments whose booking messages are due now, in a zone where it is now daytime."""
    clinic = load_clinics(CONFIG_DIR / "clinics.yaml").default
    zone_name = daytime_zone(clinic, datetime.now(UTC))
    start = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%d 10:00")
    yield [
        dict(
            zip(
                HEADERS,
                [
                    f"K{i}",
                    f"KP{i}",
                    "Test",
                    f"Patient{i}",
                    "",
                    f"k{i}@example.org",
                    "en-GB",
                    zone_name,
                    "BMBX",
                    start,
                    "60",
                    "Room 4",
                    "no",
                    "no",
                    "booked",
                ],
                strict=True,
            )
        )
        for i in range(600)
    ]


def _row(i: int, zone_name: str, start: str) -> list[str]:
    return [f"K{i}", f"KP{i}", "Test", f"Patient{i}", "", f"k{i}@example.org", "en-GB", zone_name,
            "BMBX", start, "60", "Room 4", "no", "no", "booked"]  # fmt: skip


def test_sigkill_mid_run_then_restart_sends_each_reminder_exactly_once(
    env, tmp_path, daytime_rows
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "due.csv"
    write_csv(path, daytime_rows, excel=False)
    assert cli(env, "import", str(path)).returncode == 0  # 600 booking emails due now
    outbox = tmp_path / "outbox" / "email"

    engine = create_engine(env["REMINDER_DATABASE_URL"])
    try:
        with _start_run(env) as first:
            _wait_for(lambda: outbox.exists() and len(list(outbox.glob("*.eml"))) >= 100, first)
            first.send_signal(signal.SIGKILL)
        assert len(list(outbox.glob("*.eml"))) < 600, "killed too late to prove anything"
        with _start_run(env) as second:
            try:
                _wait_for(lambda: _sent(engine) == 600, second)
            finally:
                second.send_signal(signal.SIGTERM)  # a clean stop
            assert second.wait(timeout=30) == 0
        names = sorted(p.name for p in outbox.glob("*.eml"))
        assert len(names) == 600
        # The kill may leave a half-written temp file: hidden, never a message.
        assert all(p.name.startswith(".") for p in outbox.iterdir() if p.suffix != ".eml")
        with engine.connect() as conn:
            sent_events = conn.execute(
                select(audit_log.c.reminder_id, func.count())
                .where(audit_log.c.event == "sent")
                .group_by(audit_log.c.reminder_id)
            ).all()
        assert len(sent_events) == 600 and {n for _, n in sent_events} == {1}
    finally:
        engine.dispose()


def _start_run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reminder_service", "run"], env=env, cwd=ROOT, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _sent(engine: Engine) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(reminders).where(reminders.c.status == "sent")
        return int(conn.execute(query).scalar_one())


def _wait_for(condition, process: subprocess.Popen[str], timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Wait for a real subprocess to reach a state (not a sleep standing in for a clock)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(
                f"run exited early: {process.stderr.read() if process.stderr else ''}"
            )
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the dispatcher")
        time.sleep(0.05)


def test_status_json(env, tmp_path, daytime_rows) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "few.csv"
    write_csv(path, daytime_rows[:3], excel=False)
    cli(env, "import", str(path))
    status = json.loads(cli(env, "status", "--json").stdout)
    # Email only: each booking confirmation is stored; the steps ten days ahead are beyond the
    # planning horizon, so they are counted as appointments with later reminders.
    assert status["reminders_by_status"]["pending"] == 3
    assert status["appointments_with_later_reminders"] == 3
    assert status["appointments_by_status"] == {"booked": 3}
    assert status["next_due"] is not None and status["recent_failures"] == []


def test_run_notices_an_import_made_by_another_process(env, tmp_path, daytime_rows) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "later.csv"
    write_csv(path, daytime_rows[:5], excel=False)
    engine = create_engine(env["REMINDER_DATABASE_URL"])
    quiet = {**env, "REMINDER_MAX_IDLE_SECONDS": "600"}  # no coarse poll to hide behind
    try:
        assert cli(quiet, "migrate").returncode == 0
        with _start_run(quiet) as running:
            try:
                assert cli(quiet, "import", str(path)).returncode == 0
                _wait_for(lambda: _sent(engine) == 5, running, timeout=20)
            finally:
                running.send_signal(signal.SIGTERM)
            assert running.wait(timeout=30) == 0
    finally:
        engine.dispose()


LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), None)


def _faked(env: dict[str, str], moment: str) -> dict[str, str]:
    """Run under libfaketime directly (the `faketime` wrapper does not pass SIGTERM on)."""
    return {**env, "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"@{moment}"}


@pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime (.ci/run installs faketime)")
def test_under_a_moved_system_clock_each_reminder_lands_once_at_its_time(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # New York patient, procedure Thu 10 Dec 2026 09:30: "day before" is Wed 9 Dec 18:00 EST
    # (23:00 UTC). Import in November, then run the service with the clock moved to 10 s before.
    # No blood thinner: the booking text, overdue at restart, then gives way to the day-before
    # text under the SMS caps (1 a day), which is what this test watches.
    values = ["FT1", "FP1", "Test", "Patient", "(212) 555-0142", "ft@example.org", "en-US",
              "America/New_York", "BMBX", "2026-12-10 09:30", "60", "Room 4", "yes", "no",
              "booked"]  # fmt: skip
    path = tmp_path / "ft.csv"
    write_csv(path, [dict(zip(HEADERS, values, strict=True))], excel=False)
    imported = cli(_faked(env, "2026-11-20 15:00:00"), "import", str(path))
    assert imported.returncode == 0, imported.stderr
    engine = create_engine(env["REMINDER_DATABASE_URL"])
    try:
        with _start_run(_faked(env, "2026-12-09 22:59:50")) as running:
            try:
                _wait_for(lambda: _sent_step(engine, "day_before") == 2, running, timeout=40)
            finally:
                running.send_signal(signal.SIGTERM)
            assert running.wait(timeout=30) == 0
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    reminders.c.id, reminders.c.step_id, reminders.c.status, reminders.c.sent_at
                ).add_columns(reminders.c.channel)
            ).all()
    finally:
        engine.dispose()
    due = datetime(2026, 12, 9, 23, 0, tzinfo=UTC)
    for reminder_id, step, status, sent_at, _ in rows:
        if step == "day_before":
            assert status == "sent" and due <= sent_at < due + timedelta(seconds=3)
        if status == "sent":
            files = list((tmp_path / "outbox").glob(f"*/{reminder_id}.*"))
            assert len(files) == 1
    # Escort advice (due Tue 8 Dec 10:00) was never sent late: its deadline had passed. It is
    # critical, so the clinic's staff were told instead.
    escort = {(channel, status) for _, step, status, _, channel in rows if step == "escort"}
    assert escort == {("sms", "skipped"), ("email", "skipped"), ("staff", "sent")}


def _sent_step(engine: Engine, step: str) -> int:
    with engine.connect() as conn:
        query = (
            select(func.count())
            .select_from(reminders)
            .where(reminders.c.status == "sent", reminders.c.step_id == step)
        )
        return int(conn.execute(query).scalar_one())


def test_run_sends_through_twilio_and_serves_its_signed_callbacks(
    env, tmp_path, daytime_rows
) -> None:  # type: ignore[no-untyped-def]
    """The real service process: SMS through the Twilio SDK to a local Twilio API server, and
    that message's status callback, signed as Twilio signs it, to the service's own HTTP port."""
    row = {**daytime_rows[0], "mobile": "+447700900123", "email": ""}
    path = tmp_path / "twilio.csv"
    write_csv(path, [row], excel=False)
    with serve_in_thread(Behaviour(latency_ms=20)) as server:
        public = f"http://127.0.0.1:{env['REMINDER_HTTP_PORT']}"
        twilio_env = {
            **env,
            "REMINDER_SMS_CHANNEL": "twilio",
            "REMINDER_PUBLIC_URL": public,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": server.base_url,
        }
        assert cli(twilio_env, "import", str(path)).returncode == 0
        engine = create_engine(env["REMINDER_DATABASE_URL"])
        try:
            with _start_run(twilio_env) as running:
                try:
                    _wait_for(lambda: len(server.messages()) == 1, running, timeout=60)
                    [message] = server.messages()
                    assert message["StatusCallback"].startswith(f"{public}/webhooks/twilio/status")
                    health = _http(running, f"{public}/healthz")
                    assert json.loads(health) == {"status": "ok", "database": "ok"}
                    params = status_callback_params(message, "delivered")
                    signature = sign_callback(message["StatusCallback"], params)
                    forged = asyncio.run(
                        post_status_callback(message["StatusCallback"], params, signature="x")
                    )
                    assert forged[0] == 403
                    genuine = asyncio.run(
                        post_status_callback(message["StatusCallback"], params, signature=signature)
                    )
                    assert genuine[0] == 200
                    _wait_for(lambda: _delivery(engine) == "delivered", running, timeout=20)
                finally:
                    running.send_signal(signal.SIGTERM)
                assert running.wait(timeout=30) == 0
        finally:
            engine.dispose()


def _http(process: subprocess.Popen[str], url: str) -> str:
    """GET once the server listens (the process may still be starting its HTTP thread)."""

    def answer() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answers.append(response.read().decode())
                return True
        except OSError:
            return False

    answers: list[str] = []
    _wait_for(answer, process, timeout=30)
    return answers[0]


def _delivery(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(reminders.c.delivery_status).where(reminders.c.channel == "sms")
        ).scalar()


def test_audit_shows_every_decision_about_an_appointment(env, tmp_path, daytime_rows) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "one.csv"
    write_csv(path, daytime_rows[:1], excel=False)
    assert cli(env, "import", str(path)).returncode == 0
    moved = {**daytime_rows[0], "start": daytime_rows[0]["start"].replace("10:00", "11:30")}
    write_csv(path, [moved], excel=False)
    assert cli(env, "import", str(path)).returncode == 0
    trail = json.loads(cli(env, "audit", "K0", "--json").stdout)
    events = [(e["event"], e["step"]) for e in trail]
    assert events[0] == ("imported", None) and ("rescheduled", None) in events
    cancelled = [e for e in trail if e["event"] == "cancelled"]
    assert cancelled and {e["reason"] for e in cancelled} == {"appointment rescheduled"}
    assert all(e["step"] and e["channel"] for e in cancelled)
    text = cli(env, "audit", "K0").stdout
    assert "rescheduled" in text and "k0@example.org" not in text  # no contact details
    missing = cli(env, "audit", "NOPE")
    assert missing.returncode == 2 and "no appointment with id 'NOPE'" in missing.stderr


def test_run_refuses_to_start_when_its_http_port_is_taken(env) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["REMINDER_HTTP_PORT"])))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "reminder_service", "run"], env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert "could not listen on 127.0.0.1:" in result.stderr and "--no-http" in result.stderr


def test_api_key_create_prints_a_key_once_and_stores_only_its_hash(env) -> None:  # type: ignore[no-untyped-def]
    created = cli(env, "api-key", "create", "scheduler")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rs_") and len(key) > 40
    assert cli(env, "api-key", "create", "scheduler").returncode == 2  # one key per name
    engine = create_engine(env["REMINDER_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(api_keys.c.name, api_keys.c.key_hash)).all()
    finally:
        engine.dispose()
    assert [name for name, _ in stored] == ["scheduler"]
    assert key not in str(stored)
    assert cli(env, "api-key", "revoke", "scheduler").returncode == 0


def test_the_bounce_listener_needs_smtp_with_a_bounce_address(env) -> None:  # type: ignore[no-untyped-def]
    result = cli(env, "bounces", "--port", str(free_port()))
    assert result.returncode == 2
    assert "SMTP_BOUNCE_ADDRESS" in result.stderr


def test_user_create_and_disable(env) -> None:  # type: ignore[no-untyped-def]
    def create(
        name: str, password: str, role: str = "scheduler"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reminder_service", "user", "create", name, "--role", role,
             "--password-stdin"],
            input=password + "\n", env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    made = create("night.nurse", "a long enough passphrase")
    assert made.returncode == 0, made.stderr
    assert "created night.nurse (scheduler)" in made.stdout
    taken = create("night.nurse", "another long passphrase", "admin")
    assert taken.returncode == 2 and "exists already" in taken.stderr
    weak = create("day.nurse", "short")
    assert weak.returncode == 2 and "at least 12 characters" in weak.stderr
    assert "short" not in weak.stderr.replace("at least", "")
    assert cli(env, "user", "disable", "night.nurse").returncode == 0
    again = cli(env, "user", "disable", "night.nurse")
    assert again.returncode == 2 and "no enabled user" in again.stderr
