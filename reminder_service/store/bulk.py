"""Bulk writes for imports: plain tuples straight to the driver's executemany.

SQLAlchemy Core binds every parameter of every row through Python; for the million reminder rows of
a large import that costs more than SQLite's own work. Here values are encoded once by the caller
(timestamps through `utc_encoder`, memoised, since many reminders share a moment) and the driver
receives ready tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Dialect, Table

from .tables import audit_log
from .types import UtcDateTime, encode_utc

PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s", "numeric": None, "named": None}


def utc_encoder(dialect: Dialect | str) -> Callable[[datetime | None], Any]:
    """A memoising datetime -> column value function for this dialect (or dialect name)."""
    name = dialect if isinstance(dialect, str) else dialect.name
    if name == "postgresql":
        return lambda value: value
    cache: dict[datetime, int] = {}

    def encode(value: datetime | None) -> Any:
        if value is None:
            return None
        found = cache.get(value)
        if found is None:
            found = cache[value] = encode_utc(value)
        return found

    return encode


def insert_tuples(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    preparer = conn.dialect.identifier_preparer
    names = ", ".join(preparer.quote(c) for c in columns)
    marks = ", ".join([_mark(conn)] * len(columns))
    sql = f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES ({marks})"  # noqa: S608
    conn.exec_driver_sql(sql, list(rows))


def ids_by_key(
    conn: Connection, table: Table, key: str, values: Iterable[str], chunk: int = 900
) -> dict[str, int]:
    """Primary keys of freshly inserted rows, found by their unique external key. The query goes
    to the driver as it is: SQLAlchemy would make a bound parameter of each of the values, which
    cost a large import more than the query itself."""
    preparer = conn.dialect.identifier_preparer
    head = (
        f"SELECT {preparer.quote(key)}, {preparer.quote('id')} "  # noqa: S608
        f"FROM {preparer.format_table(table)} WHERE {preparer.quote(key)} IN "
    )
    found: dict[str, int] = {}
    wanted = list(values)
    for start in range(0, len(wanted), chunk):
        part = tuple(wanted[start : start + chunk])
        marks = ", ".join([_mark(conn)] * len(part))
        for found_key, found_id in conn.exec_driver_sql(f"{head}({marks})", part):
            found[found_key] = found_id
    return found


def _mark(conn: Connection) -> str:
    """The driver's placeholder for a parameter."""
    mark = PLACEHOLDERS.get(conn.dialect.paramstyle)
    if mark is None:
        raise NotImplementedError(f"paramstyle {conn.dialect.paramstyle}")
    return mark


def insert_dicts(
    conn: Connection, table: Table, columns: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    encode = utc_encoder(conn.dialect)
    timestamps = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, UtcDateTime)]
    pick = itemgetter(*columns)
    tuples = []
    for row in rows:
        values = list(pick(row))
        for i in timestamps:
            values[i] = encode(values[i])
        tuples.append(tuple(values))
    insert_tuples(conn, table, columns, tuples)


AUDIT_COLUMNS = ("at", "appointment_id", "reminder_id", "event", "reason", "detail")


def insert_audit(conn: Connection, entries: list[dict[str, Any]]) -> None:
    """Audit entries (dicts of AUDIT_COLUMNS) in one bulk statement."""
    insert_dicts(conn, audit_log, AUDIT_COLUMNS, entries)
