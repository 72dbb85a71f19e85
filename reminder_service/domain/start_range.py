"""The years an appointment's start may fall in.

Exports write placeholder dates for "no date" (0001-01-01, 1900-01-01 00:00 is rarer, 9999-12-31
is common), and a typo can turn 2026 into 0226 or 20226. None is an appointment anyone will
attend, and near the ends of Python's datetime range (years 1 and 9999) converting to UTC or
planning days before the start overflows. So a start outside these years is refused as a field
error by every importer, and once more where appointments are applied.
"""

from __future__ import annotations

from datetime import UTC, datetime

EARLIEST_YEAR = 1900
LATEST_YEAR = 2199
EARLIEST_START = datetime(EARLIEST_YEAR, 1, 1, tzinfo=UTC)
END_OF_RANGE = datetime(LATEST_YEAR + 1, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = (
    f"is outside the years {EARLIEST_YEAR} to {LATEST_YEAR}, so it is no appointment time "
    "(exports write 0001-01-01 or 9999-12-31 for a missing date)"
)


def start_problem(start: datetime) -> str:
    """Why an aware start is not a plausible appointment time, or ""."""
    return "" if EARLIEST_START <= start < END_OF_RANGE else OUT_OF_RANGE
