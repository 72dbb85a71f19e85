"""The staff accounts table: names, roles and argon2id password hashes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from .engine import reading
from .tables import staff_users


@dataclass(frozen=True, slots=True)
class StoredUser:
    name: str
    role: str
    password_hash: str
    disabled: bool


def add(engine: Engine, name: str, role: str, password_hash: str, now: datetime) -> bool:
    """Store an account; False when the name is taken (nothing stored)."""
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(staff_users).values(
                    name=name,
                    role=role,
                    password_hash=password_hash,
                    created_at=now,
                    password_changed_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


def disable(engine: Engine, name: str, now: datetime) -> bool:
    """Disable the enabled account `name`; False when there is none."""
    with engine.begin() as conn:
        done = conn.execute(
            update(staff_users)
            .where(staff_users.c.name == name, staff_users.c.disabled_at.is_(None))
            .values(disabled_at=now)
        )
    return bool(done.rowcount)


def set_hash(engine: Engine, name: str, password_hash: str, now: datetime) -> None:
    """Replace an account's hash (its password rehashed with newer parameters)."""
    with engine.begin() as conn:
        conn.execute(
            update(staff_users)
            .where(staff_users.c.name == name)
            .values(password_hash=password_hash, password_changed_at=now)
        )


def find(engine: Engine, name: str) -> StoredUser | None:
    with reading(engine) as conn:
        row = conn.execute(
            select(
                staff_users.c.name,
                staff_users.c.role,
                staff_users.c.password_hash,
                staff_users.c.disabled_at,
            ).where(staff_users.c.name == name)
        ).first()
    if row is None:
        return None
    return StoredUser(row.name, row.role, row.password_hash, row.disabled_at is not None)
