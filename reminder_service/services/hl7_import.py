"""Apply HL7 v2 SIU messages: parse (importers.hl7v2_siu), store through the same import path as
a CSV (one lifecycle whatever the source), and say how to acknowledge each message.

A no-show (S26) stops the rest of the appointment's messages, after-care included: it is applied
as a cancellation, with the event recorded as the import's source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..domain.appointment import Appointment, AppointmentStatus
from ..importers.csv_rows import ImportDefaults, RowError
from ..importers.hl7v2_siu import ChangeKind, SiuChange, SiuMapping, parse_siu
from .importing import ImportItem, ImportService, ImportSummary


@dataclass(frozen=True)
class SiuResult:
    change: SiuChange
    ack: str  # AA, AE or AR
    text: str  # the reason for an AE or AR (no patient data)


def apply_siu(
    importer: ImportService,
    data: bytes,
    defaults: ImportDefaults,
    *,
    mapping: SiuMapping | None = None,
    label: str = "hl7",
) -> tuple[list[SiuResult], ImportSummary]:
    changes = parse_siu(data, defaults=defaults, mapping=mapping, filename=label)
    items: list[ImportItem] = []
    for change in changes:
        if change.appointment is None:
            continue
        appointment = change.appointment
        if change.kind is ChangeKind.NO_SHOW and isinstance(appointment, Appointment):
            appointment = replace(appointment, status=AppointmentStatus.CANCELLED)
        items.append((change.index, appointment))
    unusable = [
        RowError(change.index, problem.where, problem.reason)
        for change in changes
        for problem in change.errors
    ]
    times = {c.index: c.message_time for c in changes if c.message_time is not None}
    summary = importer.apply(
        items, source="hl7", label=label, parse_errors=unusable, source_times=times
    )
    refused = {e.line: e.reason for e in summary.errors if e.column == "clinic"}
    results = []
    for change in changes:
        if change.errors or not change.parsed:
            reason = "; ".join(f"{p.where}: {p.reason}" for p in change.errors)
            results.append(SiuResult(change, change.ack_code, reason))
        elif change.index in refused:
            results.append(SiuResult(change, "AE", refused[change.index]))
        else:
            results.append(SiuResult(change, "AA", ""))
    return results, summary
