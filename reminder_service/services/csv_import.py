"""Import a CSV file: stream its rows, validate and plan them in worker processes, apply them in
one transaction.

The file is read as it goes (a chunk of rows at a time, a few chunks ahead of the database), so
memory does not grow with the file; the summary keeps the row errors, not the rows. Validation
(phone numbers, emails, zones) and planning are the expensive, pure part, so they run in parallel
with the database work of the chunks before them.

All or nothing, in one transaction rather than a staging table swapped in at the end: an import
updates and cancels rows already stored (matched by appointment id), which a swap would have to
merge back row by row, and writing every row twice would double the database's work. SQLite keeps
a large transaction's pages in its WAL file on disk, PostgreSQL in its own; a row that cannot be
read late in the file (bad text, broken CSV) raises FileRejected out of the transaction, which then
rolls back.

A file uploaded through the API is imported whole from memory (import_csv_upload), with a mapping
sent beside it (mapping_sent) or named from the mappings folder (mapping_named).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.context import BaseContext
from pathlib import Path

from ..catalog import Catalog
from ..configuration.problems import ConfigError
from ..domain.appointment import Cancellation
from ..importers.base import ImportDefaults, RowError, split_warnings
from ..importers.csv_mapping import CsvMapping, parse_mapping
from ..importers.csv_rows import (
    FileRejected,
    RawRow,
    RowConverter,
    data_lines,
    open_csv,
    parse_csv,
)
from ..store.appointments import reminder_encoder
from .gc_pause import collect_young, paused_gc
from .import_plans import preplan
from .importing import ImportItem, ImportService, ImportSummary

CHUNK_ROWS = 2000
PARALLEL_FROM = 5000  # below this, starting processes costs more than it saves
# Chunks applied between searches for cycles (see gc_pause): each search also goes through the
# rows on their way from the workers, so not after every chunk.
COLLECT_EVERY = 10
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
    """Raises FileRejected (from open_csv) before anything is written if the file is refused
    whole, and with nothing written if a row further on cannot be read. `on_total` is told about
    how many rows there are (lines counted, not rows read)."""
    lines = data_lines(path)
    if on_total:
        on_total(lines)
    with open_csv(path, mapping=mapping, encoding=encoding) as table:
        now = service.now()
        converter = RowConverter(table.headers, mapping, defaults)
        task = _Task(converter, service.catalog, now, service.plan_until(now), service.dialect)
        errors: list[RowError] = []
        warnings: list[RowError] = []

        chunks_applied = itertools.count(1)

        def applied(rows: int) -> None:  # after each chunk the import applies
            if next(chunks_applied) % COLLECT_EVERY == 0:
                collect_young()
            if progress:
                progress(rows)

        with _converter(task, _worker_count(workers, lines)) as convert:
            items = _collect(convert(_chunks(table.rows)), errors, warnings)
            with paused_gc():
                return service.apply(
                    items, source="csv", label=path.name, parse_errors=errors, progress=applied,
                    now=now, parse_warnings=warnings,
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

    def __call__(self, rows: list[RawRow]) -> _Converted:
        """The chunk's import items, row errors and warnings, in file order."""
        items: list[ImportItem] = []
        errors: list[RowError] = []
        warnings: list[RowError] = []
        encode = reminder_encoder(self.dialect)
        with paused_gc():
            for row, outcome in zip(rows, self.converter.convert_many(rows), strict=True):
                result, warned = split_warnings(outcome)
                warnings.extend(warned)
                if isinstance(result, list):
                    errors.extend(result)
                elif isinstance(result, Cancellation):
                    items.append((row.line, result))
                else:
                    plan = preplan(result, self.catalog, self.now, self.until, encode)
                    items.append((row.line, result, plan))
        return items, errors, warnings


_Converted = tuple[list[ImportItem], list[RowError], list[RowError]]
_WORKER_TASK: list[_Task] = []  # in a worker process: its task, given once when it starts


def _start_worker(task: _Task) -> None:
    _WORKER_TASK.append(task)


def _in_worker(rows: list[RawRow]) -> _Converted:
    return _WORKER_TASK[0](rows)


def _chunks(rows: Iterable[RawRow]) -> Iterator[list[RawRow]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
        yield chunk


@contextmanager
def _converter(
    task: _Task, workers: int
) -> Iterator[Callable[[Iterator[list[RawRow]]], Iterator[_Converted]]]:
    """Chunks of rows -> their converted items, in order: in this process, or in `workers`
    processes, with only a few chunks on their way at a time (the file is read no further
    ahead than that)."""
    if workers == 0:
        yield lambda chunks: map(task, chunks)
        return
    context = _process_context()
    with ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(task,)) as pool:

        def convert(chunks: Iterator[list[RawRow]]) -> Iterator[_Converted]:
            pending: deque[Future[_Converted]] = deque()
            for chunk in chunks:
                pending.append(pool.submit(_in_worker, chunk))
                if len(pending) > workers + 1:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

        try:
            yield convert
        finally:
            pool.shutdown(cancel_futures=True)


def _collect(
    results: Iterator[_Converted], errors: list[RowError], warnings: list[RowError]
) -> Iterator[ImportItem]:
    for items, errored, warned in results:
        errors.extend(errored)
        warnings.extend(warned)
        yield from items
