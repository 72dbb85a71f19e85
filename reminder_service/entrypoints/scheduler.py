"""APScheduler as the timer that wakes the dispatcher; the reminder table stays the source of truth.

Four jobs: `dispatch` runs at the next due time (and at least every max_idle); `watch` looks
every second or so for an earlier due time (rows added by an import in another process) and pulls
`dispatch` forward; `materialize` adds the reminders that have come within the planning horizon,
at start and every few minutes; `confirmations` lists to staff the appointments not confirmed by
their protocol's deadline, at start and every few minutes (its alerts are reminder rows, which
the next dispatch sends). One worker thread and one instance of each job: the dispatcher never
overlaps itself. `watch` has a thread of its own and does nothing while a dispatch runs (that
dispatch sends what is due, and schedules the next itself): queued behind a long dispatch it was
skipped, with a warning, every second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from ..clock import Clock
from ..services.confirmations import Confirmations
from ..services.dispatching import DispatchService
from ..services.materializing import Materializer

log = logging.getLogger(__name__)


class DispatchTimer:
    def __init__(
        self,
        dispatcher: DispatchService,
        clock: Clock,
        max_idle: timedelta = timedelta(seconds=30),
        watch_every: float = 1.0,
        materializer: Materializer | None = None,
        materialize_every: timedelta = timedelta(minutes=5),
        confirmations: Confirmations | None = None,
        confirm_every: timedelta = timedelta(minutes=5),
    ) -> None:
        self._dispatcher = dispatcher
        self._materializer = materializer
        self._confirmations = confirmations
        self._clock = clock
        self._max_idle = max_idle
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(1), "watch": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._scheduler.add_job(
            self._guarded(self._dispatch),
            "interval",
            seconds=max_idle.total_seconds(),
            id="dispatch",
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.add_job(
            self._watch, "interval", seconds=watch_every, id="watch", executor="watch"
        )
        self._dispatching = threading.Event()
        if materializer is not None:
            self._scheduler.add_job(
                self._guarded(self._materialize),
                "interval",
                seconds=materialize_every.total_seconds(),
                id="materialize",
                next_run_time=datetime.now(UTC),
            )
        if confirmations is not None:
            self._scheduler.add_job(
                self._guarded(self._check_confirmations),
                "interval",
                seconds=confirm_every.total_seconds(),
                id="confirmations",
                next_run_time=datetime.now(UTC),
            )
        self._stopped = threading.Event()
        self._job_running = threading.Lock()  # held by each job while it runs

    def run_until_stopped(self) -> None:
        """Block until stop() (e.g. from a SIGTERM handler); in-flight sends finish first."""
        self._scheduler.start()
        heartbeat = threading.Thread(target=self._heartbeat, name="timer-heartbeat", daemon=True)
        heartbeat.start()
        log.info("dispatcher running")
        self._stopped.wait()
        # Not shutdown(wait=True): it waits for the running job while holding the scheduler's
        # lock, and a dispatch ends by pulling the next one forward, which takes that lock:
        # neither would ever finish. Stop the timer, then wait here for the job (its sends).
        self._scheduler.shutdown(wait=False)
        with self._job_running:
            log.info("dispatcher stopped")

    def _guarded(self, job: Callable[[], None]) -> Callable[[], None]:
        """`job` as the timer runs it: never once stopping has begun, and waited for by it."""

        def run() -> None:
            with self._job_running:
                if not self._stopped.is_set():
                    job()

        run.__name__ = run.__qualname__ = job.__name__
        return run

    def _heartbeat(self) -> None:
        """Nudge APScheduler every second.

        Its main loop sleeps in a timed Event.wait(), which relies on the monotonic clock. Under a
        faked clock (libfaketime, used to test due times) that wait can hang for ever, while
        time.sleep() keeps working; with this nudge a due reminder is at most a second late there,
        and nothing changes under a real clock.
        """
        while not self._stopped.is_set():
            time.sleep(1.0)
            self._scheduler.wakeup()

    def stop(self) -> None:
        self._stopped.set()

    def wake(self) -> None:
        """Dispatch now (e.g. after an in-process import)."""
        self._pull_forward(datetime.now(UTC))

    def _dispatch(self) -> None:
        self._dispatching.set()
        try:
            report = self._dispatcher.dispatch_due()
            if report.claimed:
                log.info("dispatched %d: %s", report.claimed, report.by_status)
        except Exception:  # keep the timer alive; the rows are still in the table
            log.exception("dispatch failed; will try again")
        finally:
            self._dispatching.clear()
        self._schedule_next()

    def _materialize(self) -> None:
        assert self._materializer is not None
        try:
            report = self._materializer.materialize()
            if report.reminders:
                log.info(
                    "planning horizon: %d reminders added for %d appointments",
                    report.reminders,
                    report.appointments,
                )
                self._schedule_next()
        except Exception:  # the plans stay where they resume; the next run adds them
            log.exception("materializing failed; will try again")

    def _check_confirmations(self) -> None:
        assert self._confirmations is not None
        try:
            if self._confirmations.check().alerts:
                self._schedule_next()  # the alerts are due now
        except Exception:  # nothing is claimed unless its alert is stored: the next run lists it
            log.exception("confirmation check failed; will try again")

    def _watch(self) -> None:
        """Not guarded like the other jobs: it would wait behind a running dispatch (and every
        watch run after it be skipped, with a warning); it only moves the next dispatch."""
        if self._dispatching.is_set() or self._stopped.is_set():
            return
        try:
            self._schedule_next()
        except Exception:
            if not self._stopped.is_set():  # the timer stopped under it: nothing to move
                log.exception("could not read the next due time")

    def _schedule_next(self) -> None:
        due = self._dispatcher.next_due()
        if due is None:
            return
        # The clock the dispatcher uses may differ from the wall clock (tests, faketime): convert
        # "how long until due" into wall-clock terms for APScheduler.
        wait = max(due - self._clock(), timedelta(0))
        if wait < self._max_idle:
            self._pull_forward(datetime.now(UTC) + wait)

    def _pull_forward(self, when: datetime) -> None:
        job = self._scheduler.get_job("dispatch")
        if job is not None and (job.next_run_time is None or when < job.next_run_time):
            job.modify(next_run_time=when)
