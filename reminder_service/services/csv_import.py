"""Import a CSV file: read it whole, validate rows in worker processes, apply in one transaction.

Validation (phone numbers, emails, zones) is the expensive, pure part, so it runs in parallel with
the database work of the chunks before it.

A file uploaded through the API is imported whole from memory (import_csv_upload), with a mapping
sent beside it (mapping_sent) or named from the mappings folder (mapping_named).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.context import BaseContext
from pathlib import Path

from ..catalog import Catalog
from ..configuration.problems import ConfigError
from ..domain.appointment import Appointment, Cancellation
from ..importers.base import ImportDefaults, RowError, split_warnings
from ..importers.csv_mapping import CsvMapping, parse_mapping
from ..importers.csv_rows import FileRejected, RawRow, RowConverter, parse_csv, read_csv
from ..store.appointments import reminder_encoder
from .gc_pause import paused_gc
from .import_plans import Preplan, preplan
from .importing import ImportItem, ImportService, ImportSummary

CHUNK_ROWS = 2000
PARALLEL_FROM = 5000  # below this, starting processes costs more than it saves
_MAPPING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class UploadRefused(Exception):
    """An uploaded file or its mapping refused whole, before anything is written; the message
    says why."""


def import_csv_file(
    path: Path,
    service: ImportService,
    defaults: ImportDefaults,
    *,
    mapping: CsvMapping | None = None,
    encoding: str | None = None,
    workers: int | None = None,
    on_total: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Raises FileRejected (from read_csv) before anything is written if the file is unreadable."""
    table = read_csv(path.read_bytes(), filename=str(path), mapping=mapping, encoding=encoding)
    if on_total:
        on_total(len(table.rows))
    now = service.now()
    converter = RowConverter(table.headers, mapping, defaults)
    task = _Task(converter, service.catalog, now, service.plan_until(now), service.dialect)
    errors: list[RowError] = []
    warnings: list[RowError] = []
    items = _converted(table.rows, task, errors, warnings, _worker_count(workers, len(table.rows)))
    with paused_gc():
        return service.apply(
            items, source="csv", label=path.name, parse_errors=errors, progress=progress, now=now,
            parse_warnings=warnings,
        )  # fmt: skip


def import_csv_upload(
    data: bytes,
    service: ImportService,
    defaults: ImportDefaults,
    mapping: CsvMapping | None,
    *,
    label: str,
) -> ImportSummary:
    """A file sent through the API, read and applied in this thread. Raises UploadRefused if the
    file cannot be read or the mapping does not fit its headers."""
    try:
        parsed = parse_csv(data, filename="upload.csv", defaults=defaults, mapping=mapping)
    except FileRejected as exc:
        raise UploadRefused(str(exc)) from None
    except ValueError as exc:  # the mapping does not fit the file's headers
        raise UploadRefused(str(exc)) from None
    return service.apply(
        parsed.rows,
        source="api",
        label=label,
        parse_errors=parsed.errors,
        parse_warnings=parsed.warnings,
    )


def mapping_sent(data: bytes) -> CsvMapping:
    """A mapping (YAML) sent beside its file; its problems name it `mapping`. Raises
    UploadRefused."""
    try:
        return parse_mapping(data, "mapping")
    except ConfigError as exc:
        raise UploadRefused("; ".join(map(str, exc.problems))) from None


def mapping_named(folder: Path, name: str) -> CsvMapping:
    """The mapping `name` (.yaml optional) in `folder`, config/mappings/. Raises UploadRefused for
    a name that is not a plain file name, no such mapping, or a mapping with problems."""
    if not _MAPPING_NAME.fullmatch(name):
        raise UploadRefused("mapping: a name such as openemr-style.example, no path")
    path = folder / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise UploadRefused(f"mapping: no mapping named {name!r} in config/mappings/")
    try:  # problems name the mapping as asked for, not the server's path to it
        return parse_mapping(path.read_bytes(), name)
    except ConfigError as exc:
        raise UploadRefused("; ".join(map(str, exc.problems))) from None


def _worker_count(requested: int | None, rows: int) -> int:
    if requested is not None:
        return max(0, requested)
    if rows < PARALLEL_FROM:
        return 0
    return max(1, (os.cpu_count() or 2) - 1)  # leave a core for the database work


def _process_context() -> BaseContext:
    """Fork when it is safe (no other threads): workers start at once with the modules, caches
    and catalog already loaded. Otherwise a fork server, never a fork of a threaded process.
    Chosen here, not inherited: a process that was itself spawned defaults to spawning, which
    re-imports everything in each worker."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


@dataclass(frozen=True)
class _Task:
    """What a worker needs to validate and plan a chunk of rows: plain data, so it pickles."""

    converter: RowConverter
    catalog: Catalog
    now: datetime
    until: datetime
    dialect: str  # the database's, which the planned rows are encoded for

    def __call__(self, rows: Sequence[RawRow]) -> tuple[list[Converted], list[RowError]]:
        """Each row's outcome, and the chunk's warnings."""
        converted: list[Converted] = []
        warnings: list[RowError] = []
        encode = reminder_encoder(self.dialect)
        with paused_gc():
            for outcome in self.converter.convert_many(rows):
                result, warned = split_warnings(outcome)
                warnings.extend(warned)
                if isinstance(result, list | Cancellation):
                    converted.append(result)
                else:
                    plan = preplan(result, self.catalog, self.now, self.until, encode)
                    converted.append((result, plan))
        return converted, warnings


Converted = list[RowError] | Cancellation | tuple[Appointment, Preplan]


def _converted(
    rows: Sequence[RawRow],
    task: _Task,
    errors: list[RowError],
    warnings: list[RowError],
    workers: int,
) -> Iterator[ImportItem]:
    chunks = [rows[i : i + CHUNK_ROWS] for i in range(0, len(rows), CHUNK_ROWS)]
    if workers == 0:
        yield from _collect(chunks, map(task, chunks), errors, warnings)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=_process_context()) as pool:
        yield from _collect(chunks, pool.map(task, chunks), errors, warnings)


def _collect(
    chunks: list[Sequence[RawRow]],
    results: Iterator[tuple[list[Converted], list[RowError]]],
    errors: list[RowError],
    warnings: list[RowError],
) -> Iterator[ImportItem]:
    for chunk, (converted, warned) in zip(chunks, results, strict=True):
        warnings.extend(warned)
        for raw, result in zip(chunk, converted, strict=True):
            if isinstance(result, list):
                errors.extend(result)
            elif isinstance(result, Cancellation):
                yield raw.line, result
            else:
                yield raw.line, result[0], result[1]
