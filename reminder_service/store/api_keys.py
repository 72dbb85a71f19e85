"""The API keys table: a key's name and the SHA-256 of the key, never the key itself."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from .engine import reading
from .tables import api_keys


def add(engine: Engine, name: str, key_hash: str, now: datetime) -> bool:
    """Store a key under `name`; False when that name is taken (nothing stored)."""
    try:
        with engine.begin() as conn:
            conn.execute(insert(api_keys).values(name=name, key_hash=key_hash, created_at=now))
    except IntegrityError:
        return False
    return True


def revoke(engine: Engine, name: str, now: datetime) -> bool:
    """Revoke the live key named `name`; False when there is none."""
    with engine.begin() as conn:
        done = conn.execute(
            update(api_keys)
            .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    return bool(done.rowcount)


def live_key(engine: Engine, key_hash: str) -> tuple[str, str] | None:
    """(name, stored hash) of the live key with this hash, or None."""
    with reading(engine) as conn:
        row = conn.execute(
            select(api_keys.c.name, api_keys.c.key_hash)
            .where(api_keys.c.key_hash == key_hash)
            .where(api_keys.c.revoked_at.is_(None))
        ).first()
    return None if row is None else (str(row.name), str(row.key_hash))
