"""FHIR R4 JSON -> appointment changes. Parsing only: no database, no HTTP, no clock.

`parse_fhir(document, defaults=...)` takes the parsed JSON of one `Appointment`, one `Patient`, or a
`Bundle` (batch, transaction, collection or message) and returns one `FhirChange` per Appointment,
in document order. Other resources in a bundle (MessageHeader, Provenance, Organization, Device,
Practitioner...) are ignored; Location and Patient entries are read when an Appointment refers to
them. A Patient on its own gives no change (or one rejected change if it is invalid).

Each Appointment, and each Patient it refers to, is validated with the fhir.resources R4B model.
A validation error is a `FhirIssue` whose `expression` is a FHIRPath from the document root
(`Appointment.participant[0].actor`, or `Bundle.entry[7].resource.status` inside a bundle), so the
HTTP layer can return the issues as an OperationOutcome. Diagnostics never quote names, numbers or
addresses.

Mapping:
- appointment id: the identifier whose type has code FILL (filler; HL7 v2 SCH-2, so the same
  appointment sent by HL7 v2 and by FHIR is one appointment), else PLAC (placer, SCH-1), else the
  first identifier with a value, else `Appointment.id`.
- status: booked, arrived, checked-in, fulfilled -> booked; cancelled, entered-in-error ->
  cancelled; noshow -> outcome `no_show` with the appointment kept booked (the caller stops
  after-care); proposed, pending, waitlist -> outcome `not_booked` and no appointment (reminders
  are only for booked appointments). Any other code is an error.
- start: `Appointment.start` as UTC; required. duration: end - start (minutes, rounded up), else
  `minutesDuration`, else `ImportDefaults.duration_minutes`; 1 to 1440 minutes.
- procedure: the first `serviceType[].coding[].code`, else `appointmentType.coding[].code`, else
  `reasonCode[].coding[].code`, upper-cased (the caller matches it to a protocol). Required except
  for a cancellation.
- location: the participant whose actor is a Location: the reference's `display`, else the
  Location's `name`, else its `description`, when the Location is in the bundle; else "".
- patient: the participant whose actor is a Patient (`Patient/<id>`, an absolute URL ending so, or
  a `urn:uuid:` fullUrl of a Patient entry). It is looked up in the bundle by resource type and
  id, `fullUrl` and `request.url`. Not in the bundle: `appointment=None`, outcome
  `needs_patient` and `patient_reference` set; the caller finds the patient it knows and calls
  `apply_known_patient`. A cancellation whose Patient is invalid is treated the same way.
- clinic: `ImportDefaults.clinic_id`. Flags (sedation, ...) are unknown: FHIR has no place for them.
- caregiver: the first participant whose actor is a RelatedPerson, contained in the Appointment
  (`#id`) or an entry of the Bundle, whose `patient` is the appointment's patient. Name as the
  Patient's (given family), `relationship[0]` text, else a coding's display or code; the mobile
  read as the Patient's, in the patient's countries. No such participant: the stored caregiver
  stays. FHIR R4 records no consent to texts on a RelatedPerson, so the caregiver gets no copies
  unless `ImportDefaults.fhir_caregiver_copies` (REMINDER_FHIR_CAREGIVER_COPIES) says the clinic
  collects both; consents recorded through CSV or the API for the same number stay. What cannot
  be read of a RelatedPerson is a warning, never a refused appointment.

Patient (`map_patient`):
- id: the identifier whose type has code MR (the first), else the first identifier, else the id.
- name: the `official` HumanName, else `usual`, else the first: family and the first given name.
- mobile: telecom `system: sms`, or `system: phone` with `use: mobile`, in rank order, kept as
  E.164 when `phonenumbers` calls it possible, read in the clinic's country and in the countries
  of the patient's addresses; a number that reads differently in two of them is dropped with a
  warning, never guessed (importers.contacts). (The test data
  uses 555-style numbers, which are possible but not valid); one that is not is dropped with a
  warning. Failing those, any other phone (not `use: old`) that `phonenumbers` calls a mobile
  (or mobile-or-landline when no `use` is given). email: the first `system: email` that
  email-validator accepts; others are dropped with a warning.
- language: `communication[]` with `preferred: true`, else the first: `language.coding[0].code`
  as a BCP 47 tag; the default language when absent or unreadable (with a warning). A bare tag
  with the default's language takes the default (en with default en-GB -> en-GB).
- time zone: `ImportDefaults.timezone` (FHIR R4 Patient has no time zone element).
- deceased: `deceasedBoolean` true, or any `deceasedDateTime`.
- A booked appointment whose patient has neither a mobile nor an email is an error, as in the CSV
  and HL7 v2 importers; a cancellation or no-show needs no contact at all.

Limits: a value longer than the database column that stores it (store/field_limits.py) is an
error (code `too-long`) on its element: the identifier, serviceType, participant, the Patient's
identifier, id or name. A start or end outside the years 1900-2199 (domain/start_range.py) is
an error on `start` or `end`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

import phonenumbers
import pydantic
from fhir.resources.R4B.appointment import Appointment as FhirAppointment
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.contactpoint import ContactPoint
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.relatedperson import RelatedPerson
from phonenumbers import PhoneNumberType

from ..domain.appointment import (
    CAREGIVER_UNSAID,
    Appointment,
    AppointmentStatus,
    Cancellation,
    Caregiver,
    CaregiverInfo,
    Change,
    Patient,
)
from ..domain.start_range import EARLIEST_YEAR, LATEST_YEAR, OUT_OF_RANGE, start_problem
from ..store.field_limits import MAX_LENGTH, field_problem
from .base import ImportDefaults, normalise_language
from .contacts import country_region, phone_readings, phone_regions, validated_email

__all__ = [
    "FhirChange",
    "FhirIssue",
    "FhirOutcome",
    "apply_known_patient",
    "map_patient",
    "parse_fhir",
]


class FhirOutcome(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"  # appointment kept booked; the caller stops after-care
    NOT_BOOKED = "not_booked"  # proposed, pending, waitlist: nothing to remind of yet
    NEEDS_PATIENT = "needs_patient"  # the patient is not in the document: see apply_known_patient
    REJECTED = "rejected"  # errors in `issues`


@dataclass(frozen=True, slots=True)
class FhirIssue:
    """One OperationOutcome.issue."""

    severity: str  # error, warning or information
    code: str  # IssueType: structure, required, value, code-invalid, not-supported, not-found
    expression: str  # FHIRPath from the document root, e.g. Appointment.participant[0].actor
    diagnostics: str


@dataclass(frozen=True, slots=True)
class FhirChange:
    appointment: Change | None  # a Cancellation when a cancel does not describe its appointment
    outcome: FhirOutcome
    issues: list[FhirIssue]
    patient_reference: str | None = None
    # For needs_patient: the appointment with a placeholder patient, and its outcome once completed.
    awaiting: tuple[Appointment, FhirOutcome] | None = field(default=None, repr=False)


def apply_known_patient(change: FhirChange, patient: Patient) -> FhirChange:
    """Complete a `needs_patient` change with the patient the caller found for its reference."""
    if change.awaiting is None:
        raise ValueError(f"a {change.outcome} change is not waiting for a patient")
    appointment, outcome = change.awaiting
    caregiver = appointment.patient.caregiver  # the RelatedPerson the Appointment named, if any
    if caregiver is not CAREGIVER_UNSAID:
        patient = replace(patient, caregiver=caregiver)
    return FhirChange(
        replace(appointment, patient=patient), outcome, change.issues, change.patient_reference
    )


# --- documents and bundles ----------------------------------------------------------------------

_BUNDLE_TYPES = frozenset({"batch", "transaction", "collection", "message"})


@dataclass(frozen=True, slots=True)
class _Entry:
    root: str  # FHIRPath of the resource from the document root
    resource: dict[str, Any]
    full_url: str = ""
    request_url: str = ""

    @property
    def type(self) -> str:
        kind = self.resource.get("resourceType")
        return kind if isinstance(kind, str) else ""


def parse_fhir(document: dict[str, Any], *, defaults: ImportDefaults) -> list[FhirChange]:
    """One FhirChange per Appointment in the document (see the module docstring)."""
    kind = document.get("resourceType") if isinstance(document, dict) else None
    if kind == "Bundle":
        entries, problems = _bundle_entries(document)
        if problems:
            return [_rejected(problems)]
    elif kind in ("Appointment", "Patient"):
        entries = [_Entry(str(kind), document)]
    else:
        said = f"resource type {kind!r}" if isinstance(kind, str) else "a document without one"
        return [_rejected([_error("resourceType", "not-supported", f"{said} is not supported")])]
    index = _Index(entries)
    changes = [_map_appointment(e, index, defaults) for e in entries if e.type == "Appointment"]
    if kind == "Patient":
        _, issues = _validate(FhirPatient, entries[0])
        changes += [_rejected(issues)] if issues else []
    return changes


def _bundle_entries(bundle: dict[str, Any]) -> tuple[list[_Entry], list[FhirIssue]]:
    kind = bundle.get("type")
    if not isinstance(kind, str) or kind not in _BUNDLE_TYPES:
        listed = ", ".join(sorted(_BUNDLE_TYPES))
        return [], [_error("Bundle.type", "not-supported", f"a Bundle must be one of {listed}")]
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        return [], [_error("Bundle.entry", "structure", "must be a list")]
    entries, problems = [], []
    for i, item in enumerate(raw):
        root = f"Bundle.entry[{i}]"
        resource = item.get("resource") if isinstance(item, dict) else None
        if resource is None:
            continue  # e.g. a DELETE request: nothing to read
        if not isinstance(resource, dict):
            problems.append(_error(f"{root}.resource", "structure", "must be a JSON object"))
            continue
        request = item.get("request")
        url = request.get("url") if isinstance(request, dict) else None
        full_url = item.get("fullUrl")
        entries.append(
            _Entry(
                f"{root}.resource",
                resource,
                full_url if isinstance(full_url, str) else "",
                url if isinstance(url, str) else "",
            )
        )
    return entries, problems


class _Index:
    """Resolves references to bundle entries: by type/id, fullUrl (urn:uuid:...) and request.url."""

    def __init__(self, entries: Sequence[_Entry]) -> None:
        self._keys: dict[str, _Entry] = {}
        for entry in entries:
            resource_id = entry.resource.get("id")
            if isinstance(resource_id, str):
                self._keys.setdefault(f"{entry.type}/{resource_id}", entry)
            for key in (entry.full_url, _tail(entry.full_url), entry.request_url):
                if key:
                    self._keys.setdefault(key, entry)

    def find(self, reference: str) -> _Entry | None:
        return self._keys.get(reference) or self._keys.get(_tail(reference))


def _tail(url: str) -> str:
    """`http://x/fhir/Patient/1/_history/2` -> `Patient/1`; "" for anything else."""
    if not url.startswith(("http://", "https://")):
        return ""
    parts = url.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:]) if len(parts) >= 5 else ""


def _is_type(reference: Reference, kind: str, index: _Index) -> bool:
    """Whether a reference points at a resource of this type (by its text, type, or target)."""
    text = reference.reference or ""
    if text.startswith(f"{kind}/") or f"/{kind}/" in text or reference.type == kind:
        return True
    target = index.find(text) if text else None
    return target is not None and target.type == kind


# --- validation ---------------------------------------------------------------------------------

_Model = TypeVar("_Model", bound=pydantic.BaseModel)


def _validate(model: type[_Model], entry: _Entry) -> tuple[_Model | None, list[FhirIssue]]:
    try:
        return model.model_validate(entry.resource), []
    except pydantic.ValidationError as exc:
        return None, [_validation_issue(entry.root, error) for error in exc.errors()]


def _validation_issue(root: str, error: Any) -> FhirIssue:
    path = _fhir_path(error["loc"])
    code = "required" if error["type"] == "missing" else "structure"
    message = " ".join(str(error["msg"]).split())  # fhir.resources wraps long messages
    # pydantic's message states the rule, never the value (that is in error["input"]).
    return _error(f"{root}{path}", code, message[:200])


def _fhir_path(loc: Iterable[int | str]) -> str:
    """pydantic's loc -> FHIRPath steps: ('participant', 0, 'actor') -> .participant[0].actor"""
    path = ""
    for step in loc:
        if isinstance(step, int):
            path += f"[{step}]"
        elif step == "resource_type":
            path += ".resourceType"
        elif step.endswith("__ext"):
            path += f"._{step.removesuffix('__ext')}"  # a primitive's extension element
        elif step.isidentifier():
            path += f".{step}"
        # anything else names a pydantic validator, not an element
    return path


def _error(expression: str, code: str, diagnostics: str) -> FhirIssue:
    return FhirIssue("error", code, expression, diagnostics)


def _warning(expression: str, code: str, diagnostics: str) -> FhirIssue:
    return FhirIssue("warning", code, expression, diagnostics)


def _rejected(issues: list[FhirIssue]) -> FhirChange:
    return FhirChange(None, FhirOutcome.REJECTED, issues)


def _has_errors(issues: Iterable[FhirIssue]) -> bool:
    return any(issue.severity in ("error", "fatal") for issue in issues)


# --- Appointment --------------------------------------------------------------------------------

_STATUSES: dict[str, FhirOutcome] = {
    "booked": FhirOutcome.BOOKED,
    "arrived": FhirOutcome.BOOKED,
    "checked-in": FhirOutcome.BOOKED,
    "fulfilled": FhirOutcome.BOOKED,
    "cancelled": FhirOutcome.CANCELLED,
    "entered-in-error": FhirOutcome.CANCELLED,
    "noshow": FhirOutcome.NO_SHOW,
    "proposed": FhirOutcome.NOT_BOOKED,
    "pending": FhirOutcome.NOT_BOOKED,
    "waitlist": FhirOutcome.NOT_BOOKED,
}
_MAX_MINUTES = 1440


def _map_appointment(entry: _Entry, index: _Index, defaults: ImportDefaults) -> FhirChange:
    described = _map_described(entry, index, defaults)
    status = entry.resource.get("status")
    outcome = _STATUSES.get(status) if isinstance(status, str) else None
    if outcome not in (FhirOutcome.CANCELLED, FhirOutcome.NO_SHOW):
        return described
    if isinstance(described.appointment, Appointment):
        return described
    # Its id is all a cancellation or no-show needs: whatever else is missing or unreadable
    # (participants, start, the patient's record) only warns, or its reminders would go on.
    external_id = _raw_appointment_id(entry.resource)
    if not external_id:
        return described
    unfit = _unstorable({"appointment_id": (external_id, f"{entry.root}.identifier")})
    if unfit:
        return _rejected([*described.issues, *(i for i in unfit if i not in described.issues)])
    warnings = [replace(i, severity="warning") if i.severity == "error" else i
                for i in described.issues]  # fmt: skip
    assert outcome is not None
    no_show = outcome is FhirOutcome.NO_SHOW
    return FhirChange(Cancellation(external_id, no_show=no_show), outcome, warnings)


def _map_described(entry: _Entry, index: _Index, defaults: ImportDefaults) -> FhirChange:
    model, issues = _validate(FhirAppointment, entry)
    if model is None:
        return _rejected(issues)
    root = entry.root
    outcome = _STATUSES.get(model.status or "")
    if outcome is None:
        expected = ", ".join(_STATUSES)
        issues.append(_error(f"{root}.status", "code-invalid", f"is not one of {expected}"))
        return _rejected(issues)
    if outcome is FhirOutcome.NOT_BOOKED:
        said = f"{model.status}: not booked yet, so no reminders are planned (an appointment "\
            "already booked here is left as it is)"  # fmt: skip
        issues.append(FhirIssue("information", "informational", f"{root}.status", said))
        return FhirChange(None, outcome, issues)
    cancelled = outcome is FhirOutcome.CANCELLED
    external_id = _appointment_id(model)
    if not external_id:
        issues.append(_error(f"{root}.identifier", "required", "no identifier and no id"))
    start = _utc(model.start, f"{root}.start", issues) if model.start else None
    if model.start is None:
        issues.append(_error(f"{root}.start", "required", "is required to place reminders"))
    duration = _duration(model, start, root, defaults, issues, strict=not cancelled)
    procedure = _procedure(model)
    if not procedure and not cancelled:
        where = f"{root}.serviceType"
        issues.append(_error(where, "required", "no serviceType, appointmentType or reasonCode"))
    location = _location(model, index)
    id_where = f"{root}.identifier" if model.identifier else f"{root}.id"
    issues += _unstorable({"appointment_id": (external_id, id_where),
                         "procedure": (procedure, f"{root}.serviceType"),
                         "location": (location, f"{root}.participant")})  # fmt: skip
    draft = Appointment(
        external_id=external_id,
        clinic_id=defaults.clinic_id,
        patient=_placeholder(defaults),
        procedure=procedure,
        start=start or datetime(1970, 1, 1, tzinfo=UTC),  # only when rejected below
        duration_minutes=duration,
        location=location,
        status=AppointmentStatus.CANCELLED if cancelled else AppointmentStatus.BOOKED,
    )
    return _with_patient(draft, outcome, model, entry, index, defaults, issues)


def _utc(moment: datetime, where: str, issues: list[FhirIssue]) -> datetime | None:
    """An aware instant in UTC, or None with an error when it is outside domain.start_range
    (checked before converting: near year 1 or 9999 the conversion overflows)."""
    if EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        utc = moment.astimezone(UTC)
        if not start_problem(utc):
            return utc
    issues.append(_error(where, "value", OUT_OF_RANGE))
    return None


def _unstorable(values: dict[str, tuple[str | None, str]]) -> list[FhirIssue]:
    """An error for each (value, element) its column cannot store: too long, or a NUL."""
    found = []
    for name, (value, where) in values.items():
        reason = field_problem(name, value)
        if reason:
            code = "too-long" if len(value or "") > MAX_LENGTH[name] else "value"
            found.append(_error(where, code, reason))
    return found


def _with_patient(
    draft: Appointment,
    outcome: FhirOutcome,
    model: FhirAppointment,
    entry: _Entry,
    index: _Index,
    defaults: ImportDefaults,
    issues: list[FhirIssue],
) -> FhirChange:
    root = entry.root
    reference = _patient_reference(model, index)
    if reference is None:
        what = "no participant's actor is a Patient reference"
        issues.append(_error(f"{root}.participant", "required", what))
        return _rejected(issues)
    target = index.find(reference)
    if target is None or target.type != "Patient":
        caregiver = _caregiver(model, entry, index, reference, _raw_regions({}, defaults), defaults,
                               issues)  # fmt: skip
        draft = replace(draft, patient=replace(draft.patient, caregiver=caregiver))
        return _awaiting(draft, outcome, reference, issues)
    regions = _raw_regions(target.resource, defaults)
    caregiver = _caregiver(model, entry, index, reference, regions, defaults, issues)
    draft = replace(draft, patient=replace(draft.patient, caregiver=caregiver))
    patient, patient_issues = map_patient(target.resource, defaults=defaults, root=target.root)
    if patient is None and outcome is not FhirOutcome.BOOKED:
        # Never block a cancellation on its patient's record: use the patient we already know.
        issues += [replace(issue, severity="warning") for issue in patient_issues]
        return _awaiting(draft, outcome, reference, issues)
    issues += patient_issues
    unreachable = patient is not None and not patient.mobile and not patient.email
    if unreachable and outcome is FhirOutcome.BOOKED:
        what = "no usable mobile number or email to send reminders to"
        issues.append(_error(f"{target.root}.telecom", "required", what))
    if patient is None or _has_errors(issues):
        return _rejected(issues)
    appointment = replace(draft, patient=replace(patient, caregiver=caregiver))
    return FhirChange(appointment, outcome, issues, reference)


# --- RelatedPerson: the caregiver ------------------------------------------------------------


def _caregiver(
    model: FhirAppointment,
    entry: _Entry,
    index: _Index,
    patient_reference: str,
    regions: tuple[str, ...],
    defaults: ImportDefaults,
    issues: list[FhirIssue],
) -> CaregiverInfo:
    """The first participant whose actor is a RelatedPerson, contained in the Appointment
    (`#id`) or in the request, as the patient's caregiver. None named: unsaid (the stored
    caregiver stays). Whatever cannot be read of it is a warning: the patient's reminders never
    wait on their caregiver."""
    for i, participant in enumerate(model.participant or []):
        actor = participant.actor
        if actor is None or not actor.reference:
            continue
        where = f"{entry.root}.participant[{i}].actor"
        found = _related_person(actor.reference, entry, index)
        if found is None:
            if _is_type(actor, "RelatedPerson", index):
                what = "a RelatedPerson neither contained nor in the request; the stored one stays"
                issues.append(_warning(where, "not-found", what))
            continue
        root, resource = found
        person, problems = _validate(RelatedPerson, _Entry(root, resource))
        issues += [replace(p, severity="warning") for p in problems]
        if person is None:
            return CAREGIVER_UNSAID
        if not _same_reference(person.patient.reference or "", patient_reference, index):
            what = "is another patient's related person; not taken as this patient's caregiver"
            issues.append(_warning(f"{root}.patient", "value", what))
            return CAREGIVER_UNSAID
        return _map_related_person(person, root, regions, defaults, issues)
    return CAREGIVER_UNSAID


def _related_person(
    reference: str, entry: _Entry, index: _Index
) -> tuple[str, dict[str, Any]] | None:
    """(its FHIRPath, its JSON) of the RelatedPerson a reference points at, if it is here."""
    if reference.startswith("#"):
        contained = entry.resource.get("contained")
        for k, resource in enumerate(contained if isinstance(contained, list) else []):
            if (
                isinstance(resource, dict)
                and resource.get("resourceType") == "RelatedPerson"
                and resource.get("id") == reference[1:]
            ):
                return f"{entry.root}.contained[{k}]", resource
        return None
    target = index.find(reference)
    if target is None or target.type != "RelatedPerson":
        return None
    return target.root, target.resource


def _same_reference(one: str, other: str, index: _Index) -> bool:
    if one == other:
        return True
    found = index.find(one)
    return found is not None and found is index.find(other)


def _map_related_person(
    person: RelatedPerson,
    root: str,
    regions: tuple[str, ...],
    defaults: ImportDefaults,
    issues: list[FhirIssue],
) -> Caregiver:
    telecom = _checked_telecom(person.telecom or [], root, issues)
    given, family = _name(person.name or [])
    name = " ".join(part for part in (given, family) if part)
    relationship = ""
    for concept in person.relationship or []:
        codings = concept.coding or []
        relationship = concept.text or next(
            (c.display or c.code or "" for c in codings if c.display or c.code), ""
        )
        if relationship:
            break
    relationship = relationship.strip()
    name = _storable_or_empty("caregiver_name", name, f"{root}.name", issues)
    relationship = _storable_or_empty(
        "caregiver_relationship", relationship, f"{root}.relationship", issues
    )
    # FHIR records no consent to texts here: unsaid (kept from the record for the same number)
    # unless the clinic says it collects both upstream.
    consent = True if defaults.fhir_caregiver_copies else None
    mobile = _mobile(telecom, root, regions, issues)
    return Caregiver(name, mobile, relationship, sms_consent=consent, copies=consent)


def _storable_or_empty(name: str, value: str, where: str, issues: list[FhirIssue]) -> str:
    """The value, or "" with a warning when its column cannot hold it (a caregiver's detail
    never fails the appointment)."""
    reason = field_problem(name, value)
    if not reason:
        return value
    code = "too-long" if len(value) > MAX_LENGTH[name] else "value"
    issues.append(_warning(where, code, f"{reason}; left empty"))
    return ""


def _raw_regions(resource: dict[str, Any], defaults: ImportDefaults) -> tuple[str, ...]:
    """The patient's countries (`_regions`) read from the Patient's JSON, for their caregiver's
    number; the clinic's alone when the Patient is not in the request."""
    regions = phone_regions(defaults.timezone, defaults.phone_region)
    addresses = resource.get("address")
    for address in addresses if isinstance(addresses, list) else []:
        text = address.get("country") if isinstance(address, dict) else None
        country = country_region(text) if isinstance(text, str) else None
        if country and country not in regions:
            regions += (country,)
    return regions


def _awaiting(
    draft: Appointment, outcome: FhirOutcome, reference: str, issues: list[FhirIssue]
) -> FhirChange:
    if _has_errors(issues):
        return _rejected(issues)
    awaiting = (draft, outcome)
    return FhirChange(None, FhirOutcome.NEEDS_PATIENT, issues, reference, awaiting)


def _placeholder(defaults: ImportDefaults) -> Patient:
    """Stands in until apply_known_patient; never stored."""
    language = normalise_language(defaults.language) or defaults.language
    return Patient("", "", "", None, None, language, defaults.timezone)


def _appointment_id(model: FhirAppointment) -> str:
    identifiers = [i for i in model.identifier or [] if i.value]
    for code in ("FILL", "PLAC"):
        typed = _first_typed(identifiers, code)
        if typed:
            return typed
    return (identifiers[0].value or "") if identifiers else (model.id or "")


def _raw_appointment_id(resource: dict[str, Any]) -> str:
    """`_appointment_id` read from the JSON itself, for a cancellation the model refused."""
    typed: dict[str, str] = {}
    first = ""
    identifiers = resource.get("identifier")
    for identifier in identifiers if isinstance(identifiers, list) else []:
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if not isinstance(value, str) or not value.strip():
            continue
        first = first or value.strip()
        kind = identifier.get("type")
        codings = kind.get("coding") if isinstance(kind, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            code = coding.get("code") if isinstance(coding, dict) else None
            if isinstance(code, str):
                typed.setdefault(code, value.strip())
    own = resource.get("id")
    return typed.get("FILL") or typed.get("PLAC") or first or (own if isinstance(own, str) else "")


def _first_typed(identifiers: Sequence[Identifier], code: str) -> str:
    for identifier in identifiers:
        codings = identifier.type.coding if identifier.type else None
        if any(coding.code == code for coding in codings or []):
            return identifier.value or ""
    return ""


def _duration(
    model: FhirAppointment,
    start: datetime | None,
    root: str,
    defaults: ImportDefaults,
    issues: list[FhirIssue],
    *,
    strict: bool,
) -> int:
    """end - start, else minutesDuration, else the default; `strict` makes a bad value an error."""
    report = _error if strict else _warning
    if start is not None and model.end is not None:
        end = _utc(model.end, f"{root}.end", [])
        minutes = math.ceil((end - start).total_seconds() / 60) if end else 0
        if 1 <= minutes <= _MAX_MINUTES:
            return minutes
        issues.append(report(f"{root}.end", "value", "must be 1 minute to 24 hours after start"))
    elif model.minutesDuration is not None:
        if 1 <= model.minutesDuration <= _MAX_MINUTES:
            return model.minutesDuration
        issues.append(report(f"{root}.minutesDuration", "value", "must be 1 to 1440"))
    return defaults.duration_minutes


def _procedure(model: FhirAppointment) -> str:
    concepts: list[CodeableConcept] = [
        *(model.serviceType or []),
        *([model.appointmentType] if model.appointmentType else []),
        *(model.reasonCode or []),
    ]
    for concept in concepts:
        for coding in concept.coding or []:
            if coding.code and coding.code.strip():
                return coding.code.strip().upper()
    return ""


def _location(model: FhirAppointment, index: _Index) -> str:
    for participant in model.participant or []:
        actor = participant.actor
        if actor is None or not _is_type(actor, "Location", index):
            continue
        if actor.display and actor.display.strip():
            return actor.display.strip()
        target = index.find(actor.reference) if actor.reference else None
        if target is not None:
            return _text(target.resource, "name") or _text(target.resource, "description")
    return ""


def _text(resource: dict[str, Any], key: str) -> str:
    value = resource.get(key)
    return value.strip() if isinstance(value, str) else ""


def _patient_reference(model: FhirAppointment, index: _Index) -> str | None:
    """The reference of the first participant whose actor is a Patient."""
    for participant in model.participant or []:
        actor = participant.actor
        if actor is not None and actor.reference and _is_type(actor, "Patient", index):
            return actor.reference
    return None


# --- Patient ------------------------------------------------------------------------------------

_TELECOM_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_TELECOM_USES = frozenset({"home", "work", "temp", "old", "mobile"})
_NAME_USES = ("official", "usual")


def map_patient(
    resource: dict[str, Any], *, defaults: ImportDefaults, root: str = "Patient"
) -> tuple[Patient | None, list[FhirIssue]]:
    """A FHIR Patient resource -> our Patient and issues (None when the resource is invalid)."""
    model, issues = _validate(FhirPatient, _Entry(root, resource))
    if model is None:
        return None, issues
    patient_id = _first_typed([i for i in model.identifier or [] if i.value], "MR")
    patient_id = patient_id or next((i.value for i in model.identifier or [] if i.value), "")
    patient_id = patient_id or model.id or ""
    if not patient_id:
        issues.append(_error(f"{root}.identifier", "required", "no identifier and no id"))
        return None, issues
    telecom = _checked_telecom(model.telecom or [], root, issues)
    first, last = _name(model.name or [])
    unfit = _unstorable({"patient_id": (patient_id, f"{root}.identifier"),
                          "first_name": (first, f"{root}.name.given"),
                          "last_name": (last, f"{root}.name.family"),
                          "fhir_id": (model.id, f"{root}.id")})  # fmt: skip
    if unfit:
        return None, issues + unfit
    patient = Patient(
        external_id=patient_id,
        first_name=first,
        last_name=last,
        mobile=_mobile(telecom, root, _regions(model, defaults), issues),
        email=_email(telecom, root, issues),
        language=_language(model, root, defaults, issues),
        timezone=defaults.timezone,
        deceased=bool(model.deceasedBoolean) or model.deceasedDateTime is not None,
    )
    return patient, issues


def _name(names: Sequence[HumanName]) -> tuple[str, str]:
    """(first given name, family) of the official name, else the usual one, else the first."""
    chosen = next((n for use in _NAME_USES for n in names if n.use == use), None)
    chosen = chosen or (names[0] if names else None)
    if chosen is None:
        return "", ""
    given = next((g.strip() for g in chosen.given or [] if g and g.strip()), "")
    return given, (chosen.family or "").strip()


def _checked_telecom(
    telecom: Sequence[ContactPoint], root: str, issues: list[FhirIssue]
) -> list[tuple[int, ContactPoint]]:
    """Usable contact points with their index, best rank first; bad codes are warnings."""
    usable = []
    for i, point in enumerate(telecom):
        where = f"{root}.telecom[{i}]"
        if point.system is not None and point.system not in _TELECOM_SYSTEMS:
            issues.append(_warning(f"{where}.system", "code-invalid", "unknown system; ignored"))
            continue
        if point.use is not None and point.use not in _TELECOM_USES:
            issues.append(_warning(f"{where}.use", "code-invalid", "unknown use; ignored"))
        if point.value and point.value.strip() and point.use != "old":
            usable.append((i, point))
    # FHIR rank: 1 is the most preferred; unranked points come after ranked ones, in order.
    return sorted(usable, key=lambda item: item[1].rank or math.inf)


def _regions(model: FhirPatient, defaults: ImportDefaults) -> tuple[str, ...]:
    """Where a number without its country code may have been written: the clinic's country and
    the patient's (their addresses' countries)."""
    regions = phone_regions(defaults.timezone, defaults.phone_region)
    for address in model.address or []:
        country = country_region(address.country or "")
        if country and country not in regions:
            regions += (country,)
    return regions


def _mobile(
    telecom: Sequence[tuple[int, ContactPoint]],
    root: str,
    regions: tuple[str, ...],
    issues: list[FhirIssue],
) -> str | None:
    for i, point in telecom:
        if point.system == "sms" or (point.system == "phone" and point.use == "mobile"):
            readings = phone_readings(point.value or "", regions, phonenumbers.is_possible_number)
            if len(readings) == 1:
                return readings[0]
            countries = " or ".join(regions)
            why = (
                f"reads as a different number in {countries}; dropped (never guessed)"
                if readings
                else f"not a possible phone number in region {countries}; dropped"
            )
            issues.append(_warning(f"{root}.telecom[{i}].value", "value", why))
    for _, point in telecom:
        if point.system == "phone" and point.use != "mobile":
            mobile = partial(_is_mobile, use=point.use)
            readings = phone_readings(point.value or "", regions, mobile)
            if len(readings) == 1:
                return readings[0]
    return None


def _is_mobile(number: phonenumbers.PhoneNumber, *, use: str | None) -> bool:
    """A phone not marked mobile counts when phonenumbers says it is one. In the US and Canada
    every number is "fixed line or mobile"; that counts only when the sender gave no use."""
    kind = phonenumbers.number_type(number)
    return kind == PhoneNumberType.MOBILE or (
        kind == PhoneNumberType.FIXED_LINE_OR_MOBILE and use is None
    )


def _email(
    telecom: Sequence[tuple[int, ContactPoint]], root: str, issues: list[FhirIssue]
) -> str | None:
    for i, point in telecom:
        if point.system == "email":
            address, _ = validated_email(point.value or "")
            if address is not None:
                return address
            why = "not a valid email address; dropped"  # never the address itself
            issues.append(_warning(f"{root}.telecom[{i}].value", "value", why))
    return None


def _language(
    model: FhirPatient, root: str, defaults: ImportDefaults, issues: list[FhirIssue]
) -> str:
    default = normalise_language(defaults.language) or defaults.language
    spoken = model.communication or []
    preferred = next((i for i, c in enumerate(spoken) if c.preferred), 0 if spoken else None)
    if preferred is None:
        return default
    where = f"{root}.communication[{preferred}].language"
    language = spoken[preferred].language
    if language is None:  # required by FHIR, yet `"language": null` passes the model
        issues.append(_warning(where, "required", "no language; default used"))
        return default
    codings = language.coding or []
    code = codings[0].code if codings else None
    tag = normalise_language(code or "")
    if tag is None:
        issues.append(_warning(where, "code-invalid", "not a BCP 47 tag; default used"))
        return default
    same_language = "-" not in tag and default.split("-")[0] == tag
    return default if same_language else tag
