"""`import` on the command line names each appointment already in the past, by CSV line or by
HL7 message and control id, and still imports it (exit 0)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.factories import CONFIG_DIR, TEMPLATES_DIR, migrated, run_cli

pytestmark = pytest.mark.slow

HEADER = (
    "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,procedure,"
    "start,duration_minutes,location,sedation,anticoagulant,status\n"
)


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


def test_csv_and_hl7_imports_print_a_warning_for_each_past_booking(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "past.csv"
    csv.write_text(
        HEADER + "F1,FP1,Test,Patient,,f1@example.org,en-GB,Europe/London,BMBX,2099-06-10 09:30,60,"
        "Room 4,no,no,booked\n"
        + "P1,PP1,Test,Patient,,p1@example.org,en-GB,Europe/London,BMBX,2020-06-10 09:30,60,"
        "Room 4,no,no,booked\n"
    )
    imported = run_cli(env, "import", str(csv))
    assert imported.returncode == 0, imported.stderr
    assert (
        "warning: line 3, start: appointment P1 is in the past (started 2020-06-10 09:30 "
        "Europe/London)" in imported.stdout
    )
    assert "F1" not in imported.stdout
    hl7 = tmp_path / "past.hl7"
    hl7.write_bytes(
        b"MSH|^~\\&|PAS|RIVERSIDE|REMIND|RIVERSIDE|20200601090000||SIU^S12|CTRL-7|P|2.5\r"
        b"SCH|PLACER-7|H7|||||||||^^^20200610093000\r"
        b"PID|1||MRN7||Patient^Test||||||||07700900123^PRN^CP\r"
        b"AIS|1||BMBX\r"
    )
    applied = run_cli(env, "import", str(hl7))
    assert applied.returncode == 0, applied.stderr
    assert (
        "warning: message 1 (CTRL-7), start: appointment H7 is in the past (started "
        "2020-06-10 09:30 Europe/London)" in applied.stdout
    )
