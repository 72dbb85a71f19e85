"""Apply HL7 v2 SIU messages: parse (importers.hl7v2_siu), store through the same import path as
a CSV (one lifecycle whatever the source), and say how to acknowledge each message.

A no-show (S26) stops the rest of the appointment's messages, after-care included: it is applied
as a cancellation, with the event recorded as the import's source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..importers.base import ImportDefaults, RowError, applied_as
from ..importers.hl7v2_siu import ChangeKind, SiuChange, SiuMapping, parse_siu
from .importing import ImportItem, ImportService, ImportSummary


def feed_clinic(
    clinic: str | None, mapping: SiuMapping | None, known: Mapping[str, object]
) -> tuple[str | None, list[str]]:
    """Which clinic an HL7 feed is for when a message's sending facility does not say: the
    `--clinic` given, else the mapping's `clinic`. ("", problems) when a facility map must decide
    every message, (None, []) for the configured default clinic. Problems name unknown clinics."""
    layout = mapping or SiuMapping()
    problems = [
        f"facilities: {facility!r} maps to clinic {target!r}, which is not configured"
        for facility, target in layout.facilities.items()
        if target not in known
    ]
    chosen = clinic or layout.clinic or None
    if chosen is not None and chosen not in known:
        problems.append(f"clinic {chosen!r} is not configured")
    if chosen is None and layout.facilities:
        return "", problems
    return chosen, problems


@dataclass(frozen=True)
class SiuResult:
    change: SiuChange
    ack: str  # AA, AE or AR
    text: str  # the reason for an AE or AR, or a warning with an AA (no patient data)


def apply_siu(
    importer: ImportService,
    data: bytes,
    defaults: ImportDefaults | None,
    *,
    mapping: SiuMapping | None = None,
    label: str = "hl7",
    clinics: Mapping[str, ImportDefaults] | None = None,
) -> tuple[list[SiuResult], ImportSummary]:
    """`defaults`: the feed's clinic; `clinics`: every clinic, for the mapping's facilities."""
    changes = parse_siu(data, defaults=defaults, mapping=mapping, filename=label, clinics=clinics)
    if not changes:
        return [], ImportSummary()  # no message at all: nothing to record (the caller refuses it)
    items: list[ImportItem] = []
    for change in changes:
        if change.appointment is None:
            continue
        no_show = change.kind is ChangeKind.NO_SHOW
        items.append((change.index, applied_as(change.appointment, no_show=no_show)))
    unusable = [
        RowError(change.index, problem.where, problem.reason)
        for change in changes
        for problem in change.errors
    ]
    times = {c.index: c.message_time for c in changes if c.message_time is not None}
    summary = importer.apply(
        items, source="hl7", label=label, parse_errors=unusable, source_times=times
    )
    # Refused where they were applied (an unknown clinic, a value its column cannot hold).
    parsed_errors = set(unusable)
    refused = {e.line: f"{e.column}: {e.reason}" for e in summary.errors if e not in parsed_errors}
    warned = {w.line: f"warning: {w.reason}" for w in summary.warnings}
    results = []
    for change in changes:
        if change.errors or not change.parsed:
            reason = "; ".join(f"{p.where}: {p.reason}" for p in change.errors)
            results.append(SiuResult(change, change.ack_code, reason))
        elif change.index in refused:
            results.append(SiuResult(change, "AE", refused[change.index]))
        else:  # accepted; a warning (a booking already in the past) goes back in MSA-3
            results.append(SiuResult(change, "AA", warned.get(change.index, "")))
    return results, summary
