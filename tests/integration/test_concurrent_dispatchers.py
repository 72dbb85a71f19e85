"""Two dispatcher processes on one database (SQLite or PostgreSQL) never both send a reminder."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from reminder_service import bootstrap
from reminder_service.services.dispatching import DispatchPolicy
from reminder_service.settings import Settings
from reminder_service.store.tables import reminders
from tests.factories import CONFIG_DIR, TEMPLATES_DIR, appointment, local, patient
from tests.fakes import LoggingChannel


def _worker(settings: Settings, log: Path, now_iso: str, start: Any) -> None:
    now = datetime.fromisoformat(now_iso)
    service = bootstrap.build(settings, lambda: now)
    channel = LoggingChannel(log)
    # A few in flight at a time, so the work is spread over time and both processes race for it.
    policy = DispatchPolicy(batch=10, max_in_flight=10)
    dispatcher = type(service.dispatcher)(
        service.engine, service.catalog, service.renderer, channel, channel, lambda: now, policy
    )
    start.wait()  # both processes claim from the same moment
    dispatcher.dispatch_due()
    dispatcher.close()


def test_two_processes_share_the_work_without_duplicates(tmp_path: Path, database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        outbox_dir=tmp_path / "outbox",
        config_dir=CONFIG_DIR,
        templates_dir=TEMPLATES_DIR,
        dispatch_batch=10,
    )
    booked_at = local("Europe/London", 2026, 11, 19, 11, 0)
    service = bootstrap.build(settings, lambda: booked_at)
    appts = [
        appointment(external_id=f"A{i}", patient=patient(external_id=f"P{i}")) for i in range(150)
    ]
    service.importer.apply(enumerate(appts, 2), source="test", label="t")
    with service.engine.connect() as conn:
        due = conn.execute(
            select(func.count())
            .select_from(reminders)
            .where(reminders.c.status == "pending")
            .where(reminders.c.due_at <= booked_at + timedelta(seconds=1))
        ).scalar_one()
    assert due == 300

    log = tmp_path / "sends.log"
    now = (booked_at + timedelta(seconds=1)).isoformat()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_worker, args=(settings, log, now, start)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    lines = [line.split() for line in log.read_text().splitlines()]
    sent = [reminder for _, reminder in lines]
    assert len(sent) == 300 and len(set(sent)) == 300
    assert len({pid for pid, _ in lines}) == 2  # both processes really took part
    with service.engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(reminders.c.status, func.count()).group_by(reminders.c.status)
            ).all()
        )
    assert statuses["sent"] == 300
    service.engine.dispose()
