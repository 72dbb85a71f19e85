"""`run --sample-data` as `make run` starts it, twice, with the system clock moved (libfaketime):
the sample patients are in the clinic's zone on weekday daytime slots, each printed with the
command that previews it, and a second run on the next day changes nothing."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import OperationalError

from reminder_service.store.tables import appointments, imports, patients, reminders
from tests.e2e.test_cli import LIBFAKETIME, _faked, _wait_for
from tests.factories import CONFIG_DIR, ROOT, TEMPLATES_DIR, free_port, local, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime (.ci/run installs faketime)"),
]

# Tuesday 10:00 in London (GMT), inside the send window: the booking texts go out at once.
FIRST = "2026-11-17 10:00:00"
# The next morning, before the send window opens: nothing more is due, so nothing is sent.
SECOND = "2026-11-18 07:00:00"
EXPECTED_STARTS = {
    "SAMPLE-1": local("Europe/London", 2026, 11, 27, 9, 30),  # 10 days ahead: a Friday
    "SAMPLE-2": local("Europe/London", 2026, 11, 20, 13, 30),  # 3 days ahead: a Friday
    "SAMPLE-3": local("Europe/London", 2026, 11, 23, 11, 30),  # 5 days is a Sunday: Monday
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # No REMINDER_DATABASE_URL migrated beforehand: `run` creates the database, as on a first
    # `make run`.
    return {
        **os.environ,
        "REMINDER_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'reminders.db'}",
        "REMINDER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_LOG_LEVEL": "WARNING",
        "REMINDER_HTTP_PORT": str(free_port()),
    }


def _plan(engine: Engine) -> list[tuple[object, ...]]:
    query = select(
        reminders.c.id,
        reminders.c.appointment_id,
        reminders.c.step_id,
        reminders.c.channel,
        reminders.c.status,
        reminders.c.nominal_at,
        reminders.c.due_at,
    ).order_by(reminders.c.id)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def _unsettled(engine: Engine, until: datetime) -> int:
    """Reminders due by `until` that are not yet sent or decided."""
    query = (
        select(func.count())
        .select_from(reminders)
        .where(reminders.c.status.in_(["pending", "sending"]), reminders.c.due_at <= until)
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _count(engine: Engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _run_until(env: dict[str, str], moment: str, done) -> str:  # type: ignore[no-untyped-def]
    """`run --sample-data` at `moment` until `done()`, then a clean stop; its output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "reminder_service", "run", "--sample-data", "--no-http"],
        env=_faked(env, moment), cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(done, process, timeout=120)
    finally:
        process.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # A clean stop on SIGTERM is tested in test_cli; here only what the run stored and
        # printed matters (each print is flushed, the import committed), so a run slow to stop
        # on a loaded machine is killed rather than failing this test.
        process.kill()
        stdout, stderr = process.communicate()
    assert process.returncode in (0, -signal.SIGKILL), stderr
    return stdout


def test_make_run_twice_places_the_samples_once_and_changes_nothing(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "var").mkdir()
    engine = create_engine(env["REMINDER_DATABASE_URL"])
    try:
        first_moment = datetime.fromisoformat(FIRST).replace(tzinfo=UTC)

        def first_done() -> bool:
            if not Path(tmp_path / "var" / "reminders.db").exists():
                return False
            try:
                planned = _count(engine, reminders)
            except OperationalError:  # the schema is still being created
                return False
            return planned > 0 and _unsettled(engine, first_moment + timedelta(minutes=5)) == 0

        first = _run_until(env, FIRST, first_done)
        after_first = _plan(engine)

        assert "3 appointments (3 imported)" in first
        hint = f"{shlex.quote(sys.executable)} -m reminder_service preview"
        for external_id in EXPECTED_STARTS:
            assert f"  {external_id}  " in first and f"try: {hint} {external_id}\n" in first
        with engine.connect() as conn:
            stored = conn.execute(
                select(
                    appointments.c.external_id, appointments.c.start_at, patients.c.timezone
                ).join(patients, patients.c.id == appointments.c.patient_id)
            ).all()
        assert {ext: start for ext, start, _ in stored} == EXPECTED_STARTS
        assert {tz for _, _, tz in stored} == {"Europe/London"}
        assert "SAMPLE-2  Fri 20 Nov 2026 13:30 Europe/London" in first
        # The booking texts went out at once, and steps are still to come for every patient.
        assert {"sent", "pending"} <= {row[4] for row in after_first}

        # The hint works as printed.
        shown = subprocess.run(
            [*shlex.split(hint), "SAMPLE-2"], env=env, cwd=ROOT, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("Appointment SAMPLE-2: BMBX at 2026-11-20T13:30:00+00:00")

        # Stopped once its dispatcher runs: its planning horizon (48 hours from Wednesday 07:00)
        # then adds SAMPLE-2's day-before messages (Thursday 18:00).
        second = _run_until(
            env,
            SECOND,
            lambda: _count(engine, imports) == 2 and _count(engine, reminders) > len(after_first),
        )
        assert "3 appointments (3 unchanged); 0 reminders planned, 0 cancelled" in second
        after_second = _plan(engine)
        # Every reminder of the first run is as it was (the planning horizon may add later
        # ones as the day moves on); none was cancelled.
        assert after_second[: len(after_first)] == after_first
        assert "cancelled" not in {row[4] for row in after_second}

        replanned = run_cli(_faked(env, SECOND), "replan")
        assert replanned.returncode == 0, replanned.stderr
        assert replanned.stdout.strip() == "re-planned 3 appointments: nothing changed"
        assert _plan(engine) == after_second
    finally:
        engine.dispose()
