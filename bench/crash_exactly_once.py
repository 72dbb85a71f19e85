"""Exactly once through crashes: texts due at once through the Twilio channel, the dispatcher
process SIGKILLed at random points during the burst and restarted, with and without faults.

The real `reminder-service run --no-http` process sends through the official SDK to the local
Twilio API server (tests/servers/twilio_api.py) on SQLite; the process itself (not a wrapper) is
killed with SIGKILL each time the server has accepted a randomly chosen number of messages, and
started again; after the last kill it runs until no text is pending. Then the messages the server
accepted are counted per patient (each patient has a number of their own): a patient with none is
a lost text, every message beyond one is a duplicate. Target: 0 lost and 0 duplicated.

Faults ("with faults"): 20% of sends answered 500 and 10% 429 (nothing created), 5% created and
then answered 500, 2% created and then the connection dropped; 10% of the lookups answered 500.

    .venv/bin/python bench/crash_exactly_once.py [--patients 500] [--kills 3] [--seed N]

The e2e test tests/e2e/test_twilio_crashes.py runs the same scenario (fewer patients) and asserts.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select  # noqa: E402

from bench.generate_appointments import HEADERS  # noqa: E402
from reminder_service.configuration.clinics import load_clinics  # noqa: E402
from reminder_service.entrypoints.sample_data import daytime_zone  # noqa: E402
from reminder_service.store.tables import reminders  # noqa: E402
from tests.servers.twilio_api import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    Behaviour,
    serve_in_process,
)

CONFIG_DIR = ROOT / "config"
TEMPLATES_DIR = ROOT / "templates"
CALM = Behaviour(latency_ms=20, jitter_ms=10)
FAULTS = replace(
    CALM, fail_500=0.2, throttle_429=0.1, accept_then_500=0.05, accept_then_drop=0.02,
    list_fail_500=0.1,
)  # fmt: skip
UNSETTLED = ("pending", "sending")
ADOPTED = "sent: the provider had accepted an earlier attempt"  # the dispatcher's reason


class TwilioServer(Protocol):
    base_url: str

    def messages(self) -> list[dict[str, Any]]: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass
class Outcome:
    patients: int
    accepted: int = 0  # messages the server accepted
    lost: int = 0  # patients with no message
    duplicated: int = 0  # messages beyond the first to a patient
    kills: list[int] = field(default_factory=list)  # messages accepted at each kill
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)  # the SMS reminders, at the end
    adopted: int = 0  # reminders marked sent with a message a lookup found (not sent again)
    lookups: dict[str, int] = field(default_factory=dict)  # Message list reads, by status
    numbers: list[str] = field(default_factory=list, repr=False)  # each patient's mobile


def number(i: int) -> str:
    """A mobile of its own for each patient: Ofcom's drama range (+44 7700 900000-900999)."""
    return f"+447700900{i:03d}"


def write_due_texts(path: Path, patients: int, now: datetime) -> list[str]:
    """A CSV of SMS-only patients whose booking texts are due now, in a zone where it is daytime
    (inside the clinic's send window); returns their numbers."""
    if patients > 1000:
        raise ValueError("at most 1,000 patients: one drama-range number each")
    clinic = load_clinics(CONFIG_DIR / "clinics.yaml").default
    zone_name = daytime_zone(clinic, now)
    start = (now + timedelta(days=10)).strftime("%Y-%m-%d 10:00")
    numbers = [number(i) for i in range(patients)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        for i, mobile in enumerate(numbers):
            writer.writerow(
                [f"X{i}", f"XP{i}", "Test", f"Patient{i}", mobile, "", "en-GB", zone_name,
                 "BMBX", start, "60", "Room 4", "no", "no", "booked"]
            )  # fmt: skip
    return numbers


def service_env(workdir: Path, base_url: str, env: dict[str, str]) -> dict[str, str]:
    """The service's settings for the scenario: SQLite, Twilio at the local server, a short lease
    and short retries so crashed claims and retries come back within seconds."""
    return {
        **env,
        "REMINDER_DATABASE_URL": f"sqlite:///{workdir / 'reminders.db'}",
        "REMINDER_OUTBOX_DIR": str(workdir / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_LOG_LEVEL": "WARNING",
        "REMINDER_LEASE_SECONDS": "2",
        "REMINDER_RETRY_BASE_SECONDS": "1",
        "REMINDER_RETRY_CAP_SECONDS": "2",
        "REMINDER_MAX_IDLE_SECONDS": "1",
        "REMINDER_SMS_CHANNEL": "twilio",
        "REMINDER_SMS_RATE_LIMIT": "100",
        "REMINDER_PUBLIC_URL": "https://reminders.example.org",  # callbacks: none in this run
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_API_BASE_URL": base_url,
        "TWILIO_TIMEOUT_SECONDS": "3",
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reminder_service", *args],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip


def start_run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The dispatcher itself (python -m reminder_service), so a signal reaches it and not a
    wrapper; its stderr goes to a file (a pipe nobody reads could fill and stall it)."""
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "reminder_service", "run", "--no-http"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip


def wait_for(
    condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Poll for a state of the real process (not a sleep standing in for a clock)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise RuntimeError(f"run exited early ({process.returncode}): {log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for the dispatcher: {log.read_text()[-2000:]}")
        time.sleep(0.01)


def crash_and_count(
    workdir: Path,
    server: TwilioServer,
    patients: int,
    kills: int,
    rng: random.Random,
    env: dict[str, str],
    timeout: float = 300,
) -> Outcome:
    """Import the due texts, run the dispatcher and SIGKILL it `kills` times at random points of
    the burst (by messages accepted), then run it until nothing is pending; count per patient."""
    settings = service_env(workdir, server.base_url, env)
    csv_path = workdir / "due.csv"
    outcome = Outcome(patients, numbers=write_due_texts(csv_path, patients, datetime.now(UTC)))
    for command in (("migrate",), ("import", str(csv_path))):
        done = cli(settings, *command)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stderr}")
    engine = create_engine(settings["REMINDER_DATABASE_URL"])
    log = workdir / "run.log"

    def accepted() -> int:
        return len(server.messages())

    def unsettled() -> int:
        with engine.connect() as conn:
            query = select(func.count()).select_from(reminders)
            query = query.where(reminders.c.channel == "sms", reminders.c.status.in_(UNSETTLED))
            return int(conn.execute(query).scalar_one())

    started = time.monotonic()
    try:
        for point in sorted(rng.sample(range(patients // 10, patients * 9 // 10), kills)):
            process = start_run(settings, log)
            try:
                wait_for(lambda at=point: accepted() >= at, process, log, timeout)
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait()
            outcome.kills.append(accepted())
        process = start_run(settings, log)
        try:
            wait_for(lambda: unsettled() == 0, process, log, timeout)
        finally:
            process.send_signal(signal.SIGTERM)  # a clean stop
            process.wait(timeout=30)
        outcome.seconds = time.monotonic() - started
        with engine.connect() as conn:
            outcome.statuses = dict(
                conn.execute(
                    select(reminders.c.status, func.count())
                    .where(reminders.c.channel == "sms")
                    .group_by(reminders.c.status)
                ).all()
            )
            outcome.adopted = conn.execute(
                select(func.count())
                .select_from(reminders)
                .where(reminders.c.reason.startswith(ADOPTED))
            ).scalar_one()
    finally:
        engine.dispose()
    outcome.lookups = server.stats()["list_requests"]
    per_patient = Counter(m["To"] for m in server.messages())
    outcome.accepted = sum(per_patient.values())
    outcome.lost = sum(1 for n in outcome.numbers if per_patient[n] == 0)
    outcome.duplicated = sum(per_patient[n] - 1 for n in outcome.numbers if per_patient[n] > 1)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="kill points and server faults")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    print(f"{args.patients} texts due at once through Twilio; the dispatcher SIGKILLed "
          f"{args.kills} times and restarted (seed {seed}, {os.cpu_count()} cores)")  # fmt: skip
    worst = 0
    for name, behaviour in (("no faults", CALM), ("with faults", FAULTS)):
        with (
            tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp,
            serve_in_process(replace(behaviour, seed=seed)) as server,
        ):
            outcome = crash_and_count(
                Path(tmp), server, args.patients, args.kills, random.Random(seed),
                dict(os.environ),
            )  # fmt: skip
        worst = max(worst, outcome.lost + outcome.duplicated)
        verdict = "met" if outcome.lost == 0 and outcome.duplicated == 0 else "MISSED"
        print(
            f"  {name:12} killed at {outcome.kills} accepted; {outcome.accepted} accepted for "
            f"{outcome.patients} patients in {outcome.seconds:.1f} s: lost {outcome.lost}, "
            f"duplicated {outcome.duplicated} (target 0 and 0: {verdict}); "
            f"reminders {outcome.statuses}, {outcome.adopted} of them found by a lookup; "
            f"list reads {outcome.lookups}"
        )
    sys.exit(1 if worst else 0)


if __name__ == "__main__":
    main()
