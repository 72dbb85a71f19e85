"""API keys: created by `reminder-service api-key create NAME`, shown once, stored as a hash.

A key is 32 random bytes (URL-safe text). Only its SHA-256 is kept, so a stolen database gives
no usable key; a fast hash is right here because the key has full entropy (no dictionary to try).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from ..clock import Clock
from ..store import api_keys

if TYPE_CHECKING:
    from sqlalchemy import Engine

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
        if not api_keys.add(self._engine, name, _digest(key), self._clock()):
            raise KeyExists(f"an API key named {name!r} exists already")
        return key

    def revoke(self, name: str) -> bool:
        return api_keys.revoke(self._engine, name, self._clock())

    def name_for(self, key: str) -> str | None:
        """The name of the live key `key`, or None."""
        if not key.startswith(PREFIX):
            return None
        digest = _digest(key)
        found = api_keys.live_key(self._engine, digest)
        if found is None or not hmac.compare_digest(found[1], digest):
            return None
        return found[0]
