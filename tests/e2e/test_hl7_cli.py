"""`reminder-service import FILE.hl7` and `reminder-service mllp`, as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from reminder_service.store.tables import appointments, patients
from tests.factories import CONFIG_DIR, ROOT, TEMPLATES_DIR, free_port, migrated, run_cli

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).parents[1] / "conformance" / "hl7"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REMINDER_DATABASE_URL": migrated(f"sqlite:///{tmp_path / 'reminders.db'}"),
        "REMINDER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_LOG_LEVEL": "WARNING",
    }


cli = run_cli


def stored(env: dict[str, str]) -> dict[str, str]:
    engine = create_engine(env["REMINDER_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(appointments.c.external_id, appointments.c.status))
            return {external_id: status for external_id, status in rows}
    finally:
        engine.dispose()


def test_import_takes_an_hl7_batch_file(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    batch = tmp_path / "siu-batch.hl7"
    names = ["renalware-barts-siu-s12-new-booking.hl7", "renalware-barts-siu-s13-reschedule.hl7",
             "msfc-siu-s12-biopsy-tq1-pv1-dg1.hl7"]  # fmt: skip
    batch.write_bytes(b"\r\n".join((SAMPLES / n).read_bytes().rstrip() for n in names))
    result = cli(env, "import", str(batch))
    assert result.returncode == 1, result.stderr  # one message could not be applied
    assert "message 3 (MSG00012): AE" in result.stdout
    assert stored(env) == {"149549015": "booked", "149549023": "booked"}
    again = cli(env, "import", str(batch))
    assert "unchanged" in again.stdout and stored(env) == {
        "149549015": "booked",
        "149549023": "booked",
    }


def mllp_exchange(env: dict[str, str], message: bytes, *options: str) -> bytes:
    """Start `reminder-service mllp OPTIONS`, send one message, stop it with SIGTERM; the ACK."""
    port = free_port()
    assert cli(env, "migrate").returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "reminder_service", "mllp", "--port", str(port), *options],
        env=env, cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for a real listening socket (not a sleep standing in for a clock)
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the MLLP listener did not start"
                time.sleep(0.1)
        with sock:
            sock.sendall(b"\x0b" + message.replace(b"\n", b"\r") + b"\x1c\r")
            sock.settimeout(30)
            answer = b""
            while b"\x1c\r" not in answer:
                answer += sock.recv(4096)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()
    assert code == 0
    return answer


def test_the_mllp_listener_acknowledges_and_applies(env) -> None:  # type: ignore[no-untyped-def]
    message = (SAMPLES / "renalware-barts-siu-s15-cancel.hl7").read_bytes()
    answer = mllp_exchange(env, message)
    assert b"MSA|AA|" in answer
    assert stored(env) == {"149549027": "cancelled"}


US_BOOKING = (
    b"MSH|^~\\&|EHR|LAKESIDE^2.16.840.1.113883.3.1^ISO|REMIND|X|20261120093000||SIU^S12|US1|P|2.5\r"
    b"SCH|PL1|US-APPT-1|||||||||^^^20261210093000^^^^^^^^60\r"
    b"PID|1||MRN-US-1||Patient^Test||19700101|F|||||(734)555-0123^PRN^PH|(312)555-0199^WPN^PH\r"
    b"AIS|1||BMBX\r"
)


def stored_mobile(env: dict[str, str]) -> str | None:
    engine = create_engine(env["REMINDER_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(select(patients.c.mobile)).scalar_one_or_none()
    finally:
        engine.dispose()


def test_a_us_feed_over_mllp_stores_us_numbers(env) -> None:  # type: ignore[no-untyped-def]
    # Before: read in the default (UK) clinic's region, the home number was stored as a UK
    # mobile and the message ACKed AA. With the feed's clinic, it is the US number it is; the
    # business number (PID-14) is never taken as a mobile.
    answer = mllp_exchange(env, US_BOOKING, "--clinic", "lakeside")
    assert b"MSA|AA|US1" in answer
    assert stored_mobile(env) == "+17345550123"


def test_a_facility_map_picks_the_clinic_over_mllp(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mapping = tmp_path / "siu.yaml"
    mapping.write_text("facilities:\n  LAKESIDE: lakeside\n  RIVERSIDE: riverside\n")
    answer = mllp_exchange(env, US_BOOKING, "--mapping", str(mapping))
    assert b"MSA|AA|US1" in answer
    assert stored_mobile(env) == "+17345550123"
    other = US_BOOKING.replace(b"LAKESIDE^2.16.840.1.113883.3.1^ISO", b"ELSEWHERE").replace(
        b"US-APPT-1", b"US-APPT-2"
    )
    refused = mllp_exchange(env, other, "--mapping", str(mapping))
    assert b"MSA|AE|US1" in refused and b"MSH-4" in refused


def test_an_unknown_feed_clinic_is_refused_at_start(env) -> None:  # type: ignore[no-untyped-def]
    result = cli(env, "mllp", "--port", str(free_port()), "--clinic", "nowhere")
    assert result.returncode == 2
    assert "clinic 'nowhere' is not configured" in result.stderr
