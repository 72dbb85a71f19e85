"""APScheduler is only the timer: it wakes the dispatcher at the next due time, not on a poll."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from reminder_service.entrypoints.scheduler import DispatchTimer
from reminder_service.services.dispatching import DispatchReport
from tests.fakes import FakeConfirmations, FakeDispatcher, FakeMaterializer, wall


def test_next_due_time_pulls_the_dispatch_job_forward():
    dispatcher = FakeDispatcher(due=None)
    timer = DispatchTimer(dispatcher, wall, max_idle=timedelta(seconds=30))  # type: ignore[arg-type]
    timer._scheduler.start(paused=True)
    try:
        job = timer._scheduler.get_job("dispatch")
        job.modify(next_run_time=wall() + timedelta(seconds=30))
        dispatcher.due = wall() + timedelta(seconds=5)
        timer._schedule_next()
        gap = timer._scheduler.get_job("dispatch").next_run_time - dispatcher.due
        assert abs(gap.total_seconds()) < 0.5
        # A later due time never pushes an earlier wake-up back.
        dispatcher.due = wall() + timedelta(seconds=20)
        timer._schedule_next()
        gap = timer._scheduler.get_job("dispatch").next_run_time - wall()
        assert gap < timedelta(seconds=6)
    finally:
        timer._scheduler.shutdown(wait=False)


def test_a_due_time_is_honoured_within_its_second_not_at_the_idle_poll():
    dispatcher = FakeDispatcher(due=wall() + timedelta(milliseconds=300))
    timer = DispatchTimer(dispatcher, wall, max_idle=timedelta(seconds=30), watch_every=60)  # type: ignore[arg-type]
    runner = threading.Thread(target=timer.run_until_stopped)
    runner.start()
    try:
        assert dispatcher.called.wait(timeout=10), "the timer did not wake at the due time"
        late = dispatcher.calls[1] - (dispatcher.calls[0] + timedelta(milliseconds=300))
        assert late < timedelta(seconds=2)
    finally:
        timer.stop()
        runner.join(timeout=10)
    assert not runner.is_alive()


def test_materializing_runs_at_start_and_what_it_adds_is_dispatched_on_time():
    dispatcher = FakeDispatcher(due=None)
    materializer = FakeMaterializer(dispatcher)
    timer = DispatchTimer(
        dispatcher,  # type: ignore[arg-type]
        wall,
        max_idle=timedelta(seconds=30),
        watch_every=60,  # no watch poll: the materialize job itself pulls dispatch forward
        materializer=materializer,  # type: ignore[arg-type]
        materialize_every=timedelta(minutes=5),
    )
    runner = threading.Thread(target=timer.run_until_stopped)
    runner.start()
    try:
        assert dispatcher.called.wait(timeout=10), "what was materialized was not dispatched"
        assert materializer.runs == 1 and materializer.added_due is not None
        late = dispatcher.calls[1] - materializer.added_due
        assert timedelta(0) <= late < timedelta(seconds=2)
    finally:
        timer.stop()
        runner.join(timeout=10)
    assert not runner.is_alive()


def test_the_confirmation_check_runs_at_start_and_its_alert_is_dispatched_at_once():
    dispatcher = FakeDispatcher(due=None)
    confirmations = FakeConfirmations(dispatcher)
    timer = DispatchTimer(
        dispatcher,  # type: ignore[arg-type]
        wall,
        max_idle=timedelta(seconds=30),
        watch_every=60,  # no watch poll: the check itself pulls dispatch forward
        confirmations=confirmations,  # type: ignore[arg-type]
        confirm_every=timedelta(minutes=5),
    )
    assert timer._scheduler.get_job("confirmations") is not None
    runner = threading.Thread(target=timer.run_until_stopped)
    runner.start()
    try:
        assert dispatcher.called.wait(timeout=10), "the alert was not dispatched"
        assert confirmations.runs == 1
        timer._check_confirmations()  # a failing check is logged; the timer goes on
        assert confirmations.runs == 2
    finally:
        timer.stop()
        runner.join(timeout=10)
    assert not runner.is_alive()


class _CountingDispatcher(FakeDispatcher):
    def __init__(self) -> None:
        super().__init__(due=None)
        self.asked = 0

    def next_due(self):  # type: ignore[no-untyped-def]
        self.asked += 1
        return super().next_due()


def test_the_watch_has_its_own_thread_and_leaves_a_running_dispatch_alone():
    dispatcher = _CountingDispatcher()
    timer = DispatchTimer(dispatcher, wall, max_idle=timedelta(seconds=30))  # type: ignore[arg-type]
    assert timer._scheduler.get_job("watch").executor == "watch"
    assert timer._scheduler.get_job("dispatch").executor == "default"
    timer._dispatching.set()  # as while dispatch_due runs
    timer._watch()
    assert dispatcher.asked == 0  # that dispatch schedules the next itself when it ends
    timer._dispatching.clear()
    timer._watch()
    assert dispatcher.asked == 1


class SendingWhenStopped(FakeDispatcher):
    """Still sending when the stop comes; the next reminder is due in a second."""

    def __init__(self) -> None:
        super().__init__(due=None)
        self.sending = threading.Event()
        self.finish = threading.Event()
        self.finished = False

    def dispatch_due(self) -> DispatchReport:
        self.sending.set()
        self.finish.wait()
        self.finished = True
        return DispatchReport()

    def next_due(self) -> datetime:
        return wall() + timedelta(seconds=1)


def test_a_stop_mid_dispatch_waits_for_its_sends_and_then_stops() -> None:
    """The dispatch job ends by pulling the next one forward, which takes the scheduler's lock:
    a shutdown that held that lock while waiting for the job never ended."""
    dispatcher = SendingWhenStopped()
    timer = DispatchTimer(dispatcher, wall, max_idle=timedelta(seconds=30), watch_every=60)  # type: ignore[arg-type]
    shutting_down = threading.Event()
    shutdown = timer._scheduler.shutdown

    def shutdown_then_finish_sending(wait: bool = True) -> None:
        shutting_down.set()
        shutdown(wait)

    timer._scheduler.shutdown = shutdown_then_finish_sending  # type: ignore[method-assign]
    runner = threading.Thread(target=timer.run_until_stopped, daemon=True)
    runner.start()
    assert dispatcher.sending.wait(timeout=10)
    timer.stop()
    assert shutting_down.wait(timeout=10)
    assert runner.is_alive()  # the sends in flight are waited for
    dispatcher.finish.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert dispatcher.finished
