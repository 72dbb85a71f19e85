"""The API key every data endpoint needs: `Authorization: Bearer <key>` or `X-API-Key`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Header, HTTPException, Request

from ...services.api_keys import ApiKeys


def require_key(keys: ApiKeys) -> Callable[..., str]:
    """A dependency answering 401 without a live key; its value is the key's name (who acted),
    also left in `request.state.api_key_name` for handlers that record who did something."""

    def api_key(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> str:
        key = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        name = keys.name_for(key) if key else None
        if name is None:
            raise HTTPException(401, "an API key is required", {"WWW-Authenticate": "Bearer"})
        request.state.api_key_name = name
        return name

    return api_key


def caller(request: Request) -> str:
    """The name of the key a request was authenticated with (see require_key)."""
    return str(request.state.api_key_name)
