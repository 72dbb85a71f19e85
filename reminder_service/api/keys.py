"""The API key every data endpoint needs: `Authorization: Bearer <key>` or `X-API-Key`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Header, HTTPException

from ..services.api_keys import ApiKeys


def require_key(keys: ApiKeys) -> Callable[..., str]:
    """A dependency answering 401 without a live key; its value is the key's name (who acted)."""

    def api_key(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> str:
        key = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        name = keys.name_for(key) if key else None
        if name is None:
            raise HTTPException(401, "an API key is required", {"WWW-Authenticate": "Bearer"})
        return name

    return api_key
