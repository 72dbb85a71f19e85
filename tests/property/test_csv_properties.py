"""Property: any CSV row or file gives appointments or errors naming line and column, never an
escaped exception; a file refused whole writes nothing (services/csv_import, on the database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from reminder_service.bootstrap import Service
from reminder_service.importers.csv_rows import FileRejected
from reminder_service.services.csv_import import import_csv_file
from tests.property.hostile import (
    DEFAULTS,
    check_csv_file,
    check_csv_row,
    check_row_errors,
    counts,
    csv_file,
    csv_row,
)

pytestmark = pytest.mark.property


@given(csv_row())
def test_any_row_converts_or_names_its_errors(row: dict[str, str]) -> None:
    check_csv_row(row)


@given(csv_file())
def test_any_file_parses_or_is_refused_naming_the_file(data: bytes) -> None:
    check_csv_file(data)


@given(data=csv_file())
def test_importing_any_file_applies_it_or_writes_nothing(
    service: Service, tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "hostile.csv"
    path.write_bytes(data)
    before = counts(service.engine)
    try:
        summary = import_csv_file(path, service.importer, DEFAULTS, workers=0)
    except FileRejected as exc:
        assert exc.message.startswith(f"{path}: ")
        assert counts(service.engine) == before  # no import record, no appointment, nothing
        return
    assert summary.import_id is not None
    assert counts(service.engine)["imports"] == before["imports"] + 1
    check_row_errors(summary.errors, None, range(1, len(data) + 2))
