"""The JSON API reads an appointment by the CSV layout's rules: the change it builds from an item
is the one the CSV converter builds from the same values written as a row, problems and warnings
included (named by the item's fields)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reminder_service.importers.base import (
    Converted,
    ImportDefaults,
    RowError,
    Warned,
    split_warnings,
)
from reminder_service.importers.csv_mapping import CAREGIVER_FIELDS, LAYOUT_FIELDS, OPTIONAL_FIELDS
from reminder_service.importers.csv_rows import RawRow, RowConverter
from reminder_service.importers.json_items import (
    CAREGIVER_ITEM_FIELDS,
    AppointmentIn,
    CaregiverIn,
    item_change,
)

DEFAULTS = ImportDefaults(
    "riverside", "Europe/London", "GB", "en-GB", clinic_regions=(("harbour", "US"),)
)
FIELDS = (*LAYOUT_FIELDS, *OPTIONAL_FIELDS)
FIELDS_NO_CAREGIVER = tuple(name for name in FIELDS if name not in CAREGIVER_FIELDS)


def as_csv_row(item: AppointmentIn, index: int) -> tuple[tuple[str, ...], RawRow]:
    """The item as a row of the CSV layout, as the API once read it."""
    values = item.model_dump()
    if values["duration_minutes"] is None:
        values["duration_minutes"] = ""
    caregiver = item.caregiver or CaregiverIn()
    values |= {
        "caregiver_name": caregiver.name,
        "caregiver_mobile": caregiver.mobile,
        "caregiver_relationship": caregiver.relationship,
        "caregiver_consent": "yes" if caregiver.sms_consent else "no",
        "caregiver_copies": "yes" if caregiver.copies else "no",
    }
    fields = FIELDS if item.says_caregiver else FIELDS_NO_CAREGIVER
    return fields, RawRow(index, tuple(str(values[name]) for name in fields))


def by_csv(item: AppointmentIn, index: int) -> Converted:
    headers, row = as_csv_row(item, index)
    result, warnings = split_warnings(RowConverter(headers, None, DEFAULTS).convert(row))
    named = [_item_field(w) for w in warnings]
    if isinstance(result, list):
        return [_item_field(e) for e in result]
    return Warned(result, named) if named else result


def _item_field(problem: RowError) -> RowError:
    return replace(problem, column=CAREGIVER_ITEM_FIELDS.get(problem.column, problem.column))


def texts(*samples: str) -> st.SearchStrategy[str]:
    # Outer spaces on the short ones (the long ones are at their field's limit already).
    padded = [
        s for sample in samples for s in {sample, sample if len(sample) > 30 else f" {sample} "}
    ]
    return st.sampled_from(["", *padded])


MOBILES = texts("07700 900123", "+44 7700 900456", "(734) 555-0123", "020 7946 0000", "12", "abc")
EMAILS = texts("pat@example.org", "Pat@Example.ORG", "postmaster@example.org", "not an email")
ZONES = texts("Europe/London", "America/New_York", "Mars/Olympus", "x" * 64)
LANGUAGES = texts("en", "EN-gb", "es-US", "english!", "zz-ZZZZ")
STARTS = texts(
    "2026-12-03T09:30", "2026-12-03 09:30", "2026-03-29T01:30", "2026-12-03T09:30:00Z",
    "2026-13-03T09:30", "1850-01-01T09:00", "tomorrow", "2026-12-03",
)  # fmt: skip
IDS = texts("A1", "B-2", "x\x00y", "é" * 64)
PROCEDURES = texts("colonoscopy", "BMBX", "straße" * 3, "ß" * 32)
NAMES = texts("Ann", "O'Neil", "x" * 100)


@st.composite
def items(draw: st.DrawFn) -> AppointmentIn:
    data: dict[str, Any] = {
        "appointment_id": draw(st.sampled_from(["A1", " A1 ", "x\x00y", "é" * 64, " "])),
        "patient_id": draw(IDS),
        "first_name": draw(NAMES),
        "last_name": draw(NAMES),
        "mobile": draw(MOBILES),
        "email": draw(EMAILS),
        "language": draw(LANGUAGES),
        "timezone": draw(ZONES),
        "procedure": draw(PROCEDURES),
        "start": draw(STARTS),
        "duration_minutes": draw(st.sampled_from([None, 1, 45, 1440])),
        "location": draw(texts("Room 1", "x" * 255)),
        "sedation": draw(st.sampled_from(["yes", "no", "unknown"])),
        "status": draw(st.sampled_from(["booked", "cancelled"])),
        "clinic": draw(texts("riverside", "harbour", "elsewhere")),
        "sms_consent": draw(texts("yes", "No", "declined", "verbal, 2024")),
        "deceased": draw(st.sampled_from(["", "yes", "no"])),
        "do_not_contact": draw(st.sampled_from(["", "yes", "no"])),
    }
    caregiver = draw(st.sampled_from(["absent", "null", "given"]))
    if caregiver == "null":
        data["caregiver"] = None
    elif caregiver == "given":
        data["caregiver"] = {
            "name": draw(NAMES),
            "mobile": draw(MOBILES),
            "relationship": draw(texts("mother", "x" * 64)),
            "sms_consent": draw(st.booleans()),
            "copies": draw(st.booleans()),
        }
    return AppointmentIn.model_validate(data)


@settings(max_examples=400, deadline=None)
@given(items(), st.integers(min_value=0, max_value=999))
def test_an_item_is_read_as_the_csv_layout_reads_the_same_values(
    item: AppointmentIn, index: int
) -> None:
    assert item_change(item, index, DEFAULTS) == by_csv(item, index)


def test_an_item_without_a_caregiver_key_leaves_the_stored_one_alone() -> None:
    item = AppointmentIn.model_validate(
        {"appointment_id": "A1", "patient_id": "P1", "mobile": "07700 900123",
         "procedure": "BMBX", "start": "2026-12-03T09:30"}
    )  # fmt: skip
    assert item_change(item, 0, DEFAULTS) == by_csv(item, 0)
    assert not isinstance(item_change(item, 0, DEFAULTS), list)
