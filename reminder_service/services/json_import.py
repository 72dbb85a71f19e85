"""Import the JSON API's appointments: validate each item on its own (importers.json_items), then
apply the good ones through the same import path as CSV, HL7 and FHIR.

A bad item is reported with its index and field and never fails the others; when no item is
usable, nothing is written, not even an import record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..importers.base import ImportDefaults, RowError, defaults_problems, split_warnings
from ..importers.json_items import AppointmentIn, item_change
from .importing import ImportItem, ImportService, ImportSummary

# What the HTTP layer declares and types its requests with.
__all__ = ["AppointmentIn", "ImportDefaults", "JsonImport", "import_json_items"]


@dataclass(frozen=True)
class JsonImport:
    summary: ImportSummary
    rejected_all: bool  # every item refused: nothing was written


def import_json_items(
    importer: ImportService,
    items: Sequence[Any],
    defaults: ImportDefaults,
    *,
    label: str,
) -> JsonImport:
    """Every item counted once: imported, updated, cancelled... or rejected with its reasons,
    each naming the item's index (its `line`) and field. Raises ValueError if `defaults` have
    problems (defaults_problems)."""
    problems = defaults_problems(defaults)
    if problems:
        raise ValueError("; ".join(problems))
    accepted: list[ImportItem] = []
    errors: list[RowError] = []
    warnings: list[RowError] = []
    for index, item in enumerate(items):
        validated = _item(index, item)
        if isinstance(validated, list):
            errors += validated
            continue
        result, warned = split_warnings(item_change(validated, index, defaults))
        warnings += warned
        if isinstance(result, list):
            errors += result
        else:
            accepted.append((index, result))
    if not accepted:  # refused whole: nothing is written, not even an import record
        refused = ImportSummary(
            rejected=len({e.line for e in errors}), errors=sorted(errors, key=lambda e: e.line)
        )
        return JsonImport(refused, rejected_all=bool(items))
    summary = importer.apply(
        accepted,
        source="api",
        label=label,
        parse_errors=errors,
        parse_warnings=warnings,
    )
    return JsonImport(summary, rejected_all=False)


def _item(index: int, item: Any) -> AppointmentIn | list[RowError]:
    """One item of a batch, validated alone: its problems name its index and field."""
    if not isinstance(item, dict):
        return [RowError(index, "", "is not a JSON object")]
    try:
        return AppointmentIn.model_validate(item)
    except ValidationError as exc:
        return [
            RowError(index, ".".join(str(p) for p in error["loc"]), error["msg"])
            for error in exc.errors(include_input=False, include_url=False)
        ]
