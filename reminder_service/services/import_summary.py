"""What an import did: one outcome per change, counted, and the rows it refused or warns about."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

from ..domain.audit import AuditEvent
from ..importers.base import RowError


class Outcome(StrEnum):
    """What an import did with one change; its appointment's audit event is named the same."""

    IMPORTED = "imported"
    RESCHEDULED = "rescheduled"
    UPDATED = "updated"
    CANCELLED = "cancelled"
    # A cancellation for an appointment never seen here: audited, never counted as cancelled.
    CANCEL_NOT_FOUND = "cancel_not_found"
    UNCHANGED = "unchanged"
    OUT_OF_ORDER = "out_of_order"  # older than the change already applied
    NOT_SERVED = "not_served"  # no protocol serves the procedure: stored, no reminders
    REPLANNED = "replanned"  # planned anew after the protocols or clinic settings changed

    @property
    def event(self) -> AuditEvent:
        return AuditEvent(self.value)


@dataclass
class ImportSummary:
    imported: int = 0
    rescheduled: int = 0
    updated: int = 0
    cancelled: int = 0
    cancel_not_found: int = 0  # a cancellation for an appointment never seen here
    unchanged: int = 0
    out_of_order: int = 0  # older than the change already applied (by the sender's clock)
    not_served: int = 0  # no protocol serves the procedure: stored, no reminders
    rejected: int = 0
    reminders_planned: int = 0
    reminders_cancelled: int = 0
    # Booked appointments imported or changed that started before the import: each is also
    # counted above, and named in `warnings`.
    in_the_past: int = 0
    errors: list[RowError] = field(default_factory=list)
    # Imported, but worth a look: a booking already in the past, a caregiver's number dropped.
    warnings: list[RowError] = field(default_factory=list)
    import_id: int | None = None

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int) and k != "import_id"}

    def count(self, outcome: Outcome) -> None:
        """One more change with this outcome (a re-planned appointment counts as updated)."""
        match outcome:
            case Outcome.IMPORTED:
                self.imported += 1
            case Outcome.RESCHEDULED:
                self.rescheduled += 1
            case Outcome.UPDATED | Outcome.REPLANNED:
                self.updated += 1
            case Outcome.CANCELLED:
                self.cancelled += 1
            case Outcome.CANCEL_NOT_FOUND:
                self.cancel_not_found += 1
            case Outcome.UNCHANGED:
                self.unchanged += 1
            case Outcome.OUT_OF_ORDER:
                self.out_of_order += 1
            case Outcome.NOT_SERVED:
                self.not_served += 1

    def reject(self, problems: list[RowError]) -> None:
        """A change refused before it reached the store, with every problem found in it."""
        self.errors.extend(problems)
        self.rejected += 1
