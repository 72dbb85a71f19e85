"""Never text a stranger: a number is read only in its appointment's candidate countries.

(734) 555-0123 is a Michigan number in the US and a UK mobile (+44 7345 550123) in Great Britain:
read in the wrong country, the reminders of a US patient would go to whoever holds that UK mobile.
"""

from __future__ import annotations

import pytest

from reminder_service.importers.contacts import country_region, parse_mobile, phone_regions
from reminder_service.importers.csv_mapping import CsvMapping
from reminder_service.importers.csv_rows import ImportDefaults, parse_csv

UK = ImportDefaults(
    clinic_id="riverside",
    timezone="Europe/London",
    phone_region="GB",
    language="en-GB",
    clinic_regions=(("riverside", "GB"), ("lakeside", "US")),
)
HEADER = (
    "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,procedure,"
    "start,duration_minutes,location,sedation,anticoagulant,status,clinic\n"
)


def row(mobile: str, timezone: str = "", clinic: str = "") -> str:
    start = "2026-12-10T09:30"
    return f"A1,P1,Test,Patient,{mobile},,,{timezone},BMBX,{start},60,,no,no,booked,{clinic}\n"


def mobiles(text: str, defaults: ImportDefaults = UK, mapping: CsvMapping | None = None):  # type: ignore[no-untyped-def]
    parsed = parse_csv(
        (HEADER + text).encode(), filename="p.csv", defaults=defaults, mapping=mapping
    )
    return (
        [a.patient.mobile for _, a in parsed.rows],  # type: ignore[union-attr]
        [(e.column, e.reason) for e in parsed.errors],
    )


def test_a_number_that_reads_differently_in_two_candidate_countries_is_refused() -> None:
    assert parse_mobile("(734) 555-0123", ("US",)) == ("+17345550123", "")
    mobile, reason = parse_mobile("(734) 555-0123", ("US", "GB"))
    assert mobile is None
    assert reason == "reads as a different number in US and GB; write it with its country code"
    # With its country code it is one number wherever it is read.
    assert parse_mobile("+1 734 555 0123", ("US", "GB")) == ("+17345550123", "")


def test_a_number_valid_in_only_one_candidate_country_is_that_one() -> None:
    assert parse_mobile("(212) 555-0199", ("US", "GB")) == ("+12125550199", "")
    assert parse_mobile("07700 900123", ("US", "GB")) == ("+447700900123", "")


def test_with_no_candidate_country_only_a_full_number_is_read() -> None:
    assert parse_mobile("+44 7700 900123", ()) == ("+447700900123", "")
    assert parse_mobile("07700 900123", ())[0] is None


def test_candidate_regions_are_the_zone_country_and_the_clinic_country() -> None:
    assert phone_regions("America/Chicago", "GB") == ("US", "GB")
    assert phone_regions("Europe/London", "GB") == ("GB",)
    assert phone_regions("UTC", None) == ()


@pytest.mark.parametrize(
    ("text", "region"),
    [("US", "US"), ("USA", "US"), ("gbr", "GB"), (" AUS ", "AU"), ("XX", None), ("", None)],
)
def test_country_codes_alpha2_and_alpha3(text: str, region: str | None) -> None:
    assert country_region(text) == region


def test_csv_rows_zone_country_is_always_tried() -> None:
    # The mapping's default zone is American while the default clinic is British: before, a row
    # in the default zone was read in GB only and every US number was refused "for region GB".
    mapping = CsvMapping(defaults={"timezone": "America/New_York"})
    found, errors = mobiles(row("(212) 555-0199"), mapping=mapping)
    assert (found, errors) == (["+12125550199"], [])


def test_csv_a_number_both_countries_read_is_refused_not_guessed() -> None:
    found, errors = mobiles(row("(734) 555-0123", timezone="America/Detroit"))
    assert found == []
    assert errors == [
        ("mobile", "reads as a different number in US and GB; write it with its country code")
    ]


def test_csv_a_row_of_another_clinic_is_read_in_that_clinic_country() -> None:
    # Default clinic British, row's clinic American, patient zone American: one country, read there.
    found, errors = mobiles(row("(734) 555-0123", timezone="America/Detroit", clinic="lakeside"))
    assert (found, errors) == (["+17345550123"], [])
    # No zone of its own (the default, London) and an American clinic: two readings, refused.
    found, errors = mobiles(row("(734) 555-0123", clinic="lakeside"))
    assert found == [] and "reads as a different number" in errors[0][1]


def test_csv_an_unknown_clinic_lends_no_region() -> None:
    # The row is refused later for its clinic; its number is never read in the default's region.
    found, errors = mobiles(row("07700 900123", timezone="UTC", clinic="nowhere"))
    assert found == [] and errors[0][0] == "mobile"
