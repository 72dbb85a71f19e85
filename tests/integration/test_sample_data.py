"""The quick start's sample appointments: where and when they are placed, and kept on a re-run."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from reminder_service.bootstrap import Service
from reminder_service.configuration.clinics import load_clinics
from reminder_service.domain.timing import zone
from reminder_service.entrypoints.sample_data import SAMPLE_IDS, sample_appointments
from tests.factories import CONFIG_DIR, local

CLINICS = load_clinics(CONFIG_DIR / "clinics.yaml")


@pytest.mark.parametrize("clinic_id", ["riverside", "lakeside"])
@pytest.mark.parametrize("day", range(16, 23))  # Monday 16 to Sunday 22 November 2026
def test_samples_are_in_the_clinics_zone_on_weekday_daytime_slots(clinic_id: str, day: int) -> None:
    clinic = CLINICS.get(clinic_id)
    assert clinic is not None
    # 23:30 at the clinic: "today" is the clinic's, whatever the date is in UTC by then.
    now = local(clinic.timezone, 2026, 11, day, 23, 30)
    samples = sample_appointments(clinic, now, {})
    assert [a.external_id for a in samples] == list(SAMPLE_IDS)
    for sample in samples:
        wall = sample.start.astimezone(zone(clinic.timezone))
        assert (sample.clinic_id, sample.patient.timezone) == (clinic_id, clinic.timezone)
        assert wall.weekday() < 5 and time(9) <= wall.time() <= time(14), wall
        assert sample.start - now >= timedelta(days=2, hours=10)  # the booking step's notice
    assert len({a.start for a in samples}) == 3


def test_a_later_run_keeps_stored_samples_and_places_a_passed_one_anew(
    service: Service, clock
) -> None:  # type: ignore[no-untyped-def]
    clinic = service.catalog.clinics.default
    first = sample_appointments(clinic, clock(), {})
    assert service.importer.apply(enumerate(first, 1), source="sample", label="s").imported == 3
    # The next day: the stored samples come back as stored, and the import changes nothing.
    clock.advance(days=1)
    again = sample_appointments(clinic, clock(), service.importer.stored(SAMPLE_IDS))
    assert again == first
    summary = service.importer.apply(enumerate(again, 1), source="sample", label="s")
    assert (summary.unchanged, summary.reminders_planned, summary.reminders_cancelled) == (3, 0, 0)
    # Once SAMPLE-2 (three days ahead, so Monday 23rd) has passed, a run places it from today
    # again; SAMPLE-3 (Tuesday 24th) is still to come.
    clock.advance(days=3, hours=6)
    later = sample_appointments(clinic, clock(), service.importer.stored(SAMPLE_IDS))
    assert [a == b for a, b in zip(later, first, strict=True)] == [True, False, True]
    assert later[1].start > clock() + timedelta(days=2)
    summary = service.importer.apply(enumerate(later, 1), source="sample", label="s")
    assert (summary.rescheduled, summary.unchanged) == (1, 2)
