"""An appointment sent to the JSON API as an item: its model, and the change it describes.

An item has the CSV layout's fields and is read by the CSV layout's rules (csv_rows):
a phone number, email, zone or start is accepted or refused the same way whatever the source,
and every problem names the item's field. The model's types settle what a CSV cell must spell
out (a status, a yes/no flag, a number of minutes).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..domain.appointment import (
    CAREGIVER_UNSAID,
    Appointment,
    AppointmentStatus,
    Caregiver,
    CaregiverInfo,
    Patient,
    Tristate,
)
from ..store.field_limits import MAX_LENGTH, unstorable
from .base import (
    Converted,
    ImportDefaults,
    RowError,
    Warned,
    normalise_language,
)
from .contacts import parse_email, parse_mobile, phone_regions
from .csv_mapping import LAYOUT_FIELDS, OPTIONAL_FIELDS
from .csv_rows import (
    EMPTY,
    NO_CONTACT,
    cancelled_by_id,
    caregiver_mobile_dropped,
    parse_start,
    read_language,
    read_zone,
    sms_consent_basis,
)

# An item's problems are listed in the order of the CSV layout's columns.
_ORDER = {name: i for i, name in enumerate((*LAYOUT_FIELDS, *OPTIONAL_FIELDS))}
# The CSV layout's caregiver columns -> the item's fields.
CAREGIVER_ITEM_FIELDS = {
    "caregiver_name": "caregiver.name",
    "caregiver_mobile": "caregiver.mobile",
    "caregiver_relationship": "caregiver.relationship",
    "caregiver_consent": "caregiver.sms_consent",
    "caregiver_copies": "caregiver.copies",
}


class CaregiverIn(BaseModel):
    """The patient's caregiver. Copies of the patient's texts go to them only when both
    `copies` (the patient's choice) and `sms_consent` (the caregiver's) are true."""

    name: str = Field(default="", max_length=MAX_LENGTH["caregiver_name"])
    mobile: str = Field(default="", max_length=40, description="read as the patient's mobile is")
    relationship: str = Field(default="", max_length=MAX_LENGTH["caregiver_relationship"])
    sms_consent: bool = False
    copies: bool = False


class AppointmentIn(BaseModel):
    """One appointment, with the CSV layout's fields and rules (see the README). Text that is
    stored as given is limited to its column's length (store/field_limits.py)."""

    appointment_id: str = Field(min_length=1, max_length=MAX_LENGTH["appointment_id"])
    # Required for a booking (the CSV rules say so, per item); a cancellation needs only its id.
    patient_id: str = Field(default="", max_length=MAX_LENGTH["patient_id"])
    first_name: str = Field(default="", max_length=MAX_LENGTH["first_name"])
    last_name: str = Field(default="", max_length=MAX_LENGTH["last_name"])
    mobile: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=MAX_LENGTH["email"])
    language: str = Field(default="", max_length=MAX_LENGTH["language"])
    timezone: str = Field(default="", max_length=MAX_LENGTH["timezone"])
    procedure: str = Field(default="", max_length=MAX_LENGTH["procedure"])
    start: str = Field(default="", max_length=40, description="ISO 8601; naive = patient's zone")
    duration_minutes: int | None = Field(default=None, ge=1, le=1440)
    location: str = Field(default="", max_length=MAX_LENGTH["location"])
    sedation: Literal["yes", "no", "unknown"] = "unknown"
    anticoagulant: Literal["yes", "no", "unknown"] = "unknown"
    status: Literal["booked", "cancelled"] = "booked"
    clinic: str = Field(default="", max_length=MAX_LENGTH["clinic"])
    on_chemotherapy: Literal["yes", "no", "unknown"] = "unknown"
    diabetes_on_medication: Literal["yes", "no", "unknown"] = "unknown"
    sms_consent: str = Field(default="", max_length=MAX_LENGTH["sms_consent"])
    deceased: Literal["yes", "no", ""] = ""
    do_not_contact: Literal["yes", "no", ""] = ""
    caregiver: CaregiverIn | None = None

    @property
    def says_caregiver(self) -> bool:
        """An item without a `caregiver` key says nothing about one: the stored caregiver
        stays. `"caregiver": null` says the patient has none."""
        return "caregiver" in self.model_fields_set


def item_change(item: AppointmentIn, index: int, defaults: ImportDefaults) -> Converted:
    """The change the item describes (a cancelled one with problems: a cancellation of its
    id), with its warnings; or its problems, each naming the item's field. `defaults` must have
    no `defaults_problems`."""
    errors: list[RowError] = []

    def fail(name: str, reason: str) -> None:
        errors.append(RowError(index, name, reason))

    status = AppointmentStatus(item.status)
    zone_name, problem = read_zone(item.timezone.strip() or defaults.timezone)
    if problem:
        fail("timezone", problem)
    language, problem = read_language(
        item.language.strip() or normalise_language(defaults.language) or ""
    )
    if problem:
        fail("language", problem)
    start = parse_start(item.start.strip(), (), zone_name)
    if isinstance(start, str):
        fail("start", start)
    clinic = item.clinic.strip() or defaults.clinic_id
    regions = phone_regions(zone_name, defaults.region_of(clinic))
    mobile = email = None
    if item.mobile.strip():
        mobile, problem = parse_mobile(item.mobile.strip(), regions)
        if problem:
            fail("mobile", problem)
    if item.email.strip():
        email, problem = parse_email(item.email.strip())
        if problem:
            fail("email", problem)
    if not item.mobile.strip() and not item.email.strip() and status is AppointmentStatus.BOOKED:
        fail("mobile", NO_CONTACT)
    required = {
        name: getattr(item, name).strip() for name in ("appointment_id", "patient_id", "procedure")
    }
    for name, value in required.items():
        if not value:
            fail(name, EMPTY)
    procedure = required["procedure"].upper()
    consent = sms_consent_basis(item.sms_consent.strip())
    warnings: list[RowError] = []
    caregiver = _caregiver(item, regions, index, warnings)
    stored = {"appointment_id": required["appointment_id"], "patient_id": required["patient_id"],
              "first_name": item.first_name.strip(), "last_name": item.last_name.strip(),
              "mobile": mobile, "email": email, "language": language, "timezone": zone_name,
              "procedure": procedure, "location": item.location.strip(), "clinic": clinic,
              "sms_consent": consent}  # fmt: skip
    if isinstance(caregiver, Caregiver):
        stored |= {"caregiver_name": caregiver.name,
                   "caregiver_relationship": caregiver.relationship}  # fmt: skip
    for name, reason in unstorable(stored):
        fail(name, reason)
    if status is AppointmentStatus.CANCELLED and errors:
        return cancelled_by_id(required["appointment_id"], errors, "appointment_id")
    if errors:
        return [_named(e) for e in sorted(errors, key=lambda e: _ORDER[e.column])]
    assert not isinstance(start, str)
    appointment = Appointment(
        external_id=required["appointment_id"],
        clinic_id=clinic,
        patient=Patient(
            external_id=required["patient_id"],
            first_name=item.first_name.strip(),
            last_name=item.last_name.strip(),
            mobile=mobile,
            email=email,
            language=language,
            timezone=zone_name,
            sms_consent=consent,
            deceased=item.deceased == "yes",
            do_not_contact=item.do_not_contact == "yes",
            caregiver=caregiver,
        ),
        procedure=procedure,
        start=start,
        duration_minutes=item.duration_minutes or defaults.duration_minutes,
        location=item.location.strip(),
        status=status,
        sedation=Tristate(item.sedation),
        anticoagulant=Tristate(item.anticoagulant),
        on_chemotherapy=Tristate(item.on_chemotherapy),
        diabetes_on_medication=Tristate(item.diabetes_on_medication),
    )
    return Warned(appointment, warnings) if warnings else appointment


def _caregiver(
    item: AppointmentIn, regions: tuple[str, ...], index: int, warnings: list[RowError]
) -> CaregiverInfo:
    """The item's caregiver: unsaid without a `caregiver` key; none when it gives neither a name
    nor a mobile. A number that cannot be read is a warning: no copies go."""
    if not item.says_caregiver:
        return CAREGIVER_UNSAID
    given = item.caregiver or CaregiverIn()
    name, text = given.name.strip(), given.mobile.strip()
    if not name and not text:
        return None
    mobile = None
    if text:
        mobile, problem = parse_mobile(text, regions)
        if problem:
            why = caregiver_mobile_dropped(problem)
            warnings.append(RowError(index, CAREGIVER_ITEM_FIELDS["caregiver_mobile"], why))
    return Caregiver(
        name,
        mobile,
        given.relationship.strip(),
        sms_consent=given.sms_consent,
        copies=given.copies,
    )


def _named(problem: RowError) -> RowError:
    """The problem named by the item's field (`caregiver.name`), not the CSV column's."""
    field = CAREGIVER_ITEM_FIELDS.get(problem.column)
    return problem if field is None else RowError(problem.line, field, problem.reason)
