"""The real `run --no-http` process sending through Twilio's SDK to the local Twilio API server,
SIGKILLed three times at random points of a burst and restarted, with Twilio failing: each
patient gets exactly one text, none is lost. (bench/crash_exactly_once.py runs the same scenario
with 500 patients, with and without faults, and prints the figures.)"""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from bench.crash_exactly_once import FAULTS, crash_and_count
from reminder_service.store.tables import reminders
from tests.servers.twilio_api import serve_in_thread

pytestmark = pytest.mark.slow

PATIENTS = 300


def test_sigkill_three_times_through_twilio_faults_sends_each_text_exactly_once(
    tmp_path: Path,
) -> None:
    seed = random.randrange(1_000_000)  # new kill points and faults each run; named on failure
    with serve_in_thread(replace(FAULTS, seed=seed)) as server:
        outcome = crash_and_count(
            tmp_path, server, PATIENTS, 3, random.Random(seed), dict(os.environ), timeout=120
        )
        messages = server.messages()
        stats = server.stats()
    seen = f"seed {seed}: {outcome}"
    assert len(outcome.kills) == 3 and outcome.kills[-1] < PATIENTS, seen  # during the burst
    assert (outcome.lost, outcome.duplicated) == (0, 0), seen
    assert outcome.statuses == {"sent": PATIENTS}, seen
    # The faults happened: refusals, and messages created whose answer was a 500 or nothing.
    assert {"429", "500", "0"} <= set(stats["status_codes"]), seen
    assert stats["list_requests"].get("500", 0) > 0, seen  # lookups failed too, and were retried
    assert outcome.adopted > 0, seen  # unknown outcomes found by a lookup, not sent again
    # Every reminder records the one message its patient has.
    engine = create_engine(f"sqlite:///{tmp_path / 'reminders.db'}")
    try:
        with engine.connect() as conn:
            recorded = conn.execute(
                select(reminders.c.provider_id, reminders.c.attempt_started_at).where(
                    reminders.c.channel == "sms"
                )
            ).all()
    finally:
        engine.dispose()
    assert sorted(sid for sid, _ in recorded) == sorted(m["sid"] for m in messages), seen
    assert all(started is None for _, started in recorded)  # nothing left in doubt
