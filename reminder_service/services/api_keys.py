"""API keys: created by `reminder-service api-key create NAME`, shown once, stored as a hash.

A key is 32 random bytes (URL-safe text). Only its SHA-256 is kept, so a stolen database gives
no usable key; a fast hash is right here because the key has full entropy (no dictionary to try).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..clock import Clock
from ..store.engine import reading
from ..store.tables import api_keys

PREFIX = "rs_"


class KeyExists(ValueError):
    pass


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    def create(self, name: str) -> str:
        """A new key for `name`; the only time the key itself is available."""
        key = PREFIX + secrets.token_urlsafe(32)
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(api_keys).values(
                        name=name, key_hash=_digest(key), created_at=self._clock()
                    )
                )
        except IntegrityError:
            raise KeyExists(f"an API key named {name!r} exists already") from None
        return key

    def revoke(self, name: str) -> bool:
        with self._engine.begin() as conn:
            done = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
        return bool(done.rowcount)

    def name_for(self, key: str) -> str | None:
        """The name of the live key `key`, or None."""
        if not key.startswith(PREFIX):
            return None
        digest = _digest(key)
        with reading(self._engine) as conn:
            row = conn.execute(
                select(api_keys.c.name, api_keys.c.key_hash)
                .where(api_keys.c.key_hash == digest)
                .where(api_keys.c.revoked_at.is_(None))
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return str(row.name)
