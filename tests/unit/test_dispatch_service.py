"""The dispatch use case over an in-memory reminder store: claim, decide, render, send, record."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from reminder_service import bootstrap
from reminder_service.channels.base import ChannelError, OutgoingEmail, OutgoingSms, Receipt
from reminder_service.domain.appointment import AppointmentStatus
from reminder_service.domain.failures import Failure, FailureKind
from reminder_service.domain.planning import Recipient, ReminderStatus
from reminder_service.domain.protocol import Channel
from reminder_service.domain.reminder import Reminder, StoredAppointment
from reminder_service.rendering.renderer import Renderer
from reminder_service.services.dispatching import DispatchPolicy, DispatchService
from reminder_service.settings import Settings
from tests.factories import CONFIG_DIR, TEMPLATES_DIR, appointment, local, patient
from tests.fakes import FakeReminderStore, RecordingChannel

NOW = local("Europe/London", 2026, 12, 3, 11)
CATALOG = bootstrap.load_catalog(Settings(config_dir=CONFIG_DIR, templates_dir=TEMPLATES_DIR))
RENDERER = Renderer(TEMPLATES_DIR)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def reminder(id: int = 1, **changes: Any) -> Reminder:
    base = Reminder(
        id=id, appointment_id=1, appointment_version=1, step_id="booked", channel=Channel.SMS,
        recipient=Recipient.PATIENT, template="booked", status=ReminderStatus.PENDING,
        reason="planned", nominal_at=NOW, due_at=NOW, not_after=None, attempts=0,
    )  # fmt: skip
    return replace(base, **changes)


def stored(**changes: Any) -> StoredAppointment:
    booked = NOW - timedelta(days=1)
    return StoredAppointment(
        id=1, appointment=appointment(**changes), patient_id=1, protocol_id="bone_marrow_biopsy",
        version=1, booked_at=booked, scheduled_at=booked,
    )  # fmt: skip


def dispatcher(store: FakeReminderStore, channel: Any, clock: Clock) -> DispatchService:
    policy = DispatchPolicy(batch=10, max_in_flight=20)
    return DispatchService(
        None, CATALOG, RENDERER, channel, channel, clock, policy,
        failures=CATALOG.failures, store=store, jitter=lambda: 1.0,
    )  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


def run(store: FakeReminderStore, channel: Any, clock: Clock) -> dict[str, int]:
    service = dispatcher(store, channel, clock)
    try:
        return service.dispatch_due().by_status
    finally:
        service.close()


def test_a_due_text_is_sent_to_the_patient_and_recorded_sent(clock: Clock) -> None:
    store, channel = FakeReminderStore(), RecordingChannel()
    store.add(reminder(), stored())
    assert run(store, channel, clock) == {"sent": 1}
    [message] = channel.sent
    assert isinstance(message, OutgoingSms) and message.to == patient().mobile
    assert store.reminders[1].status is ReminderStatus.SENT
    assert store.provider_ids == {1: "fake-1"}


def test_a_cancelled_appointments_reminder_is_recorded_cancelled_and_not_sent(
    clock: Clock,
) -> None:
    store, channel = FakeReminderStore(), RecordingChannel()
    store.add(reminder(), stored(status=AppointmentStatus.CANCELLED))
    assert run(store, channel, clock) == {"cancelled": 1}
    assert channel.sent == []
    assert store.reminders[1].status is ReminderStatus.CANCELLED
    assert store.reminders[1].reason == "appointment cancelled"


def test_at_night_a_reminder_moves_to_the_window_without_using_an_attempt(clock: Clock) -> None:
    clock.now = local("Europe/London", 2026, 12, 3, 22)
    store, channel = FakeReminderStore(), RecordingChannel()
    store.add(reminder(due_at=clock.now), stored())
    assert run(store, channel, clock) == {"pending": 1}
    assert channel.sent == []
    deferred = store.reminders[1]
    assert deferred.status is ReminderStatus.PENDING
    assert deferred.due_at == local("Europe/London", 2026, 12, 4, 8)
    assert deferred.attempts == 0 and deferred.reason == "deferred to the send window"


def test_an_opted_out_number_gets_nothing_and_follow_ups_are_asked_for(clock: Clock) -> None:
    store, channel = FakeReminderStore(), RecordingChannel()
    store.add(reminder(), stored())
    store.sms_opt_outs.add(str(patient().mobile))
    assert run(store, channel, clock) == {"skipped": 1}
    assert channel.sent == []
    assert [o.reason for o in store.undeliverable] == ["the number has opted out of SMS"]


def test_a_staff_alert_goes_to_the_clinics_staff_address(clock: Clock) -> None:
    store, channel = FakeReminderStore(), RecordingChannel()
    alert = reminder(channel=Channel.EMAIL, recipient=Recipient.STAFF, template="staff_alert",
                     alert="escort: no channel reached the patient")  # fmt: skip
    store.add(alert, stored())
    assert run(store, channel, clock) == {"sent": 1}
    [message] = channel.sent
    clinic = CATALOG.clinics.get(appointment().clinic_id)
    assert clinic is not None
    assert isinstance(message, OutgoingEmail) and message.to == clinic.staff_email


class RefusingChannel(RecordingChannel):
    """Rejects every text for good, as for a number that replied STOP."""

    async def send_sms(self, message: OutgoingSms) -> Receipt:
        raise ChannelError(Failure("twilio", FailureKind.HTTP, status=400, code="21610"))


def test_a_number_that_unsubscribed_at_the_provider_is_put_on_the_opt_out_list(
    clock: Clock,
) -> None:
    store, channel = FakeReminderStore(), RefusingChannel()
    store.add(reminder(), stored())
    assert run(store, channel, clock) == {"failed": 1}
    assert store.opted_out == {patient().mobile}
    assert store.reminders[1].reason.startswith("permanent failure")


class LeaseStealingChannel(RecordingChannel):
    """While the text is in flight, another worker claims the reminder (its lease ran out)."""

    def __init__(self, store: FakeReminderStore) -> None:
        super().__init__()
        self._store = store

    async def send_sms(self, message: OutgoingSms) -> Receipt:
        taken = self._store.reminders[message.reminder_id]
        self._store.reminders[message.reminder_id] = replace(taken, claim_token="another")
        return await super().send_sms(message)


def test_a_worker_that_lost_its_lease_records_nothing(clock: Clock) -> None:
    store = FakeReminderStore()
    channel = LeaseStealingChannel(store)
    store.add(reminder(), stored())
    run(store, channel, clock)
    assert len(channel.sent) == 1
    assert store.recorded == []  # the text went; its result is the new claim holder's to write
    assert store.reminders[1].claim_token == "another"
    assert store.reminders[1].status is ReminderStatus.SENDING


def test_a_long_running_dispatcher_keeps_nothing_of_the_reminders_it_recorded(
    clock: Clock,
) -> None:
    """Its sets of reminders in flight and of message ids not yet recorded are emptied as the
    outcomes are written: they do not grow with every reminder sent."""
    store, channel = FakeReminderStore(), RecordingChannel()
    service = dispatcher(store, channel, clock)
    try:
        for round_ in range(3):
            for i in range(25):
                id_ = round_ * 100 + i
                cancelled = AppointmentStatus.CANCELLED if i % 5 == 0 else AppointmentStatus.BOOKED
                store.add(
                    reminder(id_, appointment_id=id_),
                    replace(stored(status=cancelled), id=id_, patient_id=id_),
                )
            report = service.dispatch_due()
            assert report.by_status == {"sent": 20, "cancelled": 5}
            assert service._active == set()
            assert service._taken == set()
    finally:
        service.close()
    assert len(channel.sent) == 60


class FailingOnceStore(FakeReminderStore):
    """The database fails the first write of outcomes (the texts went; nothing is recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def record(self, outcomes: Any, now: datetime) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database went away")
        return super().record(outcomes, now)


def test_outcomes_the_database_failed_to_write_are_not_held_and_are_claimed_again(
    clock: Clock,
) -> None:
    """Held, they would be skipped as 'still in flight here' at every later claim, and their
    message ids would hide their own messages from the lookup: never settled until a restart."""
    store, channel = FailingOnceStore(), RecordingChannel()
    store.add(reminder(), stored())
    service = dispatcher(store, channel, clock)
    try:
        with pytest.raises(ConnectionError):
            service.dispatch_due()
        assert service._active == set()
        assert service._taken == set()
        assert store.reminders[1].status is ReminderStatus.SENDING  # nothing written
        clock.now += timedelta(minutes=5)  # past the lease: claimed again
        report = service.dispatch_due()
    finally:
        service.close()
    assert report.claimed == 1
    assert store.reminders[1].status is not ReminderStatus.SENDING
