"""Apply a FHIR R4 document (an Appointment, a Patient, or a batch/transaction Bundle): parse
(importers.fhir_appointments), resolve patients, store through the same import path as CSV and
HL7, and say what went wrong as OperationOutcome issues.

- Patients sent (alone or in the Bundle) are stored with their FHIR id, so a later Appointment
  that only refers to one finds it; a reference to a patient nobody sent is `not-found`.
- A no-show stops the rest of the plan, as with HL7's S26.
- Each Appointment's `meta.lastUpdated` orders changes as HL7's MSH-7 does: an older one
  arriving later changes nothing.
- Nothing is written when the request holds errors and no usable appointment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..domain.appointment import Patient
from ..domain.start_range import EARLIEST_YEAR, LATEST_YEAR
from ..importers.base import ImportDefaults, applied_as
from ..importers.fhir_appointments import (
    FhirChange,
    FhirIssue,
    FhirOutcome,
    apply_known_patient,
    map_patient,
    parse_fhir,
)
from .importing import ImportItem, ImportService, ImportSummary

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class FhirImport:
    issues: list[FhirIssue]
    summary: ImportSummary | None  # None: nothing applied


def apply_fhir(
    importer: ImportService, document: dict[str, Any], defaults: ImportDefaults
) -> FhirImport:
    patients, issues = _patients(document, defaults)
    if document.get("resourceType") == "Patient":
        if any(i.severity == "error" for i in issues):
            return FhirImport(issues, None)
        importer.save_patients(patients)
        return FhirImport(issues, ImportSummary())
    changes = [_with_known(change, importer) for change in parse_fhir(document, defaults=defaults)]
    issues += [issue for change in changes for issue in change.issues]
    issues += [
        FhirIssue("error", "not-found", "Appointment.participant.actor",
                  f"{change.patient_reference} is neither in the request nor a known patient")
        for change in changes
        if change.outcome == FhirOutcome.NEEDS_PATIENT
    ]  # fmt: skip
    items: list[ImportItem] = []
    for index, change in enumerate(changes):
        if change.appointment is not None:
            no_show = change.outcome == FhirOutcome.NO_SHOW
            items.append((index, applied_as(change.appointment, no_show=no_show)))
    if not items:
        not_booked = changes and all(c.outcome == FhirOutcome.NOT_BOOKED for c in changes)
        # Proposed, pending or waitlisted: understood, and nothing to do yet (a 200, not a 422).
        return FhirImport(issues, ImportSummary() if not_booked else None)
    importer.save_patients(patients)
    updated = _last_updated(document)
    times: dict[int, datetime] = {}
    for item in items:
        moment = updated[item[0]] if item[0] < len(updated) else None
        if moment is not None:
            times[item[0]] = moment
    summary = importer.apply(items, source="fhir", label="FHIR", source_times=times)
    resources = _appointments(document)
    for warning in summary.warnings:
        root, resource = resources[warning.line] if warning.line < len(resources) else ("", {})
        resource_id = resource.get("id")
        named = f"Appointment/{resource_id}: " if _is_fhir_id(resource_id) else ""
        where = f"{root or 'Appointment'}.{warning.column}"
        issues.append(FhirIssue("warning", "business-rule", where, named + warning.reason))
    return FhirImport(issues, summary)


def _with_known(change: FhirChange, importer: ImportService) -> FhirChange:
    """A reference to a Patient not in the document: one already stored under that FHIR id."""
    if change.outcome != FhirOutcome.NEEDS_PATIENT or not change.patient_reference:
        return change
    known = importer.known_patient(change.patient_reference.rsplit("/", 1)[-1])
    return apply_known_patient(change, known) if known is not None else change


def _patients(
    document: dict[str, Any], defaults: ImportDefaults
) -> tuple[list[tuple[str, Patient]], list[FhirIssue]]:
    """The Patients sent, with their FHIR ids; issues only for a Patient sent alone (in a
    Bundle, parse_fhir reports those its Appointments use)."""
    resources: list[tuple[str, dict[str, Any]]] = []
    if document.get("resourceType") == "Patient":
        resources.append(("Patient", document))
    elif document.get("resourceType") == "Bundle":
        for index, entry in enumerate(_entries(document)):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
                resources.append((f"Bundle.entry[{index}].resource", resource))
    found: list[tuple[str, Patient]] = []
    issues: list[FhirIssue] = []
    for root, resource in resources:
        patient, problems = map_patient(resource, defaults=defaults, root=root)
        issues += problems
        if patient is not None and isinstance(resource.get("id"), str):
            found.append((resource["id"], patient))
    return found, issues if document.get("resourceType") == "Patient" else []


def _last_updated(document: dict[str, Any]) -> list[datetime | None]:
    """Each Appointment's meta.lastUpdated (aware), in document order, as parse_fhir's changes."""
    times: list[datetime | None] = []
    for _, resource in _appointments(document):
        meta = resource.get("meta")
        text = meta.get("lastUpdated") if isinstance(meta, dict) else None
        try:
            moment = datetime.fromisoformat(text) if isinstance(text, str) else None
        except ValueError:
            moment = None
        # A placeholder year (0001, 9999) is no time its sender made a change: it orders nothing.
        usable = (
            moment is not None
            and moment.tzinfo is not None
            and (EARLIEST_YEAR <= moment.year <= LATEST_YEAR)
        )
        times.append(moment if usable else None)
    return times


def _is_fhir_id(value: object) -> bool:
    """A FHIR logical id (R4: 1-64 of A-Z a-z 0-9 - .): safe to echo in an issue."""
    return isinstance(value, str) and FHIR_ID.fullmatch(value) is not None


def _appointments(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Each Appointment resource with its place, in document order, as parse_fhir's changes."""
    if document.get("resourceType") == "Appointment":
        return [("Appointment", document)]
    return [
        (f"Bundle.entry[{index}].resource", entry["resource"])
        for index, entry in enumerate(_entries(document))
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == "Appointment"
    ]


def _entries(document: dict[str, Any]) -> list[Any]:
    """A Bundle's entries; none when `entry` is not a list (parse_fhir reports that)."""
    entries = document.get("entry")
    return entries if isinstance(entries, list) else []
