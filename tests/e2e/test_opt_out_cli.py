"""`reminder-service opt-out --email` and `opt-in --email` as real processes: how staff honour
an unsubscribe email that reached the clinic's mailbox (and undo one on the patient's word)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from reminder_service.store.engine import make_engine
from reminder_service.store.tables import email_opt_outs
from tests.factories import CONFIG_DIR, TEMPLATES_DIR, migrated, run_cli

pytestmark = pytest.mark.slow


def opted_out(database: str) -> list[tuple[str, str]]:
    engine = make_engine(database)
    try:
        with engine.connect() as conn:
            query = select(email_opt_outs.c.email, email_opt_outs.c.source)
            return [(e, s) for e, s in conn.execute(query).all()]
    finally:
        engine.dispose()


def test_staff_opt_an_address_out_and_in_again(tmp_path: Path) -> None:
    database = migrated(f"sqlite:///{tmp_path / 'reminders.db'}")
    env = {
        **os.environ,
        "REMINDER_DATABASE_URL": database,
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_OUTBOX_DIR": str(tmp_path / "outbox"),
    }

    first = run_cli(env, "opt-out", "--email", "Test.Patient@example.org")
    assert (first.returncode, first.stdout.strip()) == (0, "Test.Patient@example.org: opted out")
    again = run_cli(env, "opt-out", "--email", "test.patient@EXAMPLE.org")
    assert again.stdout.strip() == "test.patient@example.org: already opted out"
    assert opted_out(database) == [("test.patient@example.org", "staff")]

    bad = run_cli(env, "opt-out", "--email", "not an address")
    assert bad.returncode == 2 and "--email: not an email address" in bad.stderr
    assert "Traceback" not in bad.stderr

    back = run_cli(env, "opt-in", "--email", "test.patient@example.org")
    assert (back.returncode, back.stdout.strip()) == (0, "test.patient@example.org: opted in")
    assert opted_out(database) == []
    assert "was not opted out" in run_cli(env, "opt-in", "--email", "x@example.org").stdout
