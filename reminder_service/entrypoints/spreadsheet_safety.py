"""Cells safe to open in a spreadsheet: CSV injection (OWASP's "CSV Injection").

Excel, LibreOffice and Google Sheets run a cell that starts with `=`, `+`, `-` or `@` as a
formula, and a leading tab or carriage return can hide such a start from a naive check. Every
CSV the service writes holds text taken from files that someone else made (a row error names
the header as the file spelled it), so each such cell is written with a leading single quote,
which spreadsheets show as text. Numbers are written as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """The value as a cell that no spreadsheet evaluates."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_rows(handle: IO[str], rows: Iterable[Iterable[object]]) -> None:
    """csv.writer's rows, every text cell neutralised."""
    writer = csv.writer(handle)
    writer.writerows([neutralise(value) for value in row] for row in rows)
