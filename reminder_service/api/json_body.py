"""Request bodies parsed as JSON, with a bound on how deeply they nest.

Python's json parser recurses once per level, so `[[[[...` a few thousand deep raises
RecursionError (a 500, and a stack's worth of work per request), and a body just under that
depth recurses again in every validator that walks it. No appointment or FHIR document needs
much depth: a FHIR Bundle's deepest element (entry.resource.participant.actor.identifier.type.
coding.extension...) is about a dozen levels down. So a body nesting past MAX_DEPTH is refused
as a client error before anything reads it.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


class BadJson(ValueError):
    """The body is not JSON we accept; the message says why (never quoting it)."""


def parse_json(body: bytes) -> Any:
    try:
        document = json.loads(body)
    except RecursionError:
        raise BadJson(f"the body nests more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError):
        raise BadJson("the body is not JSON") from None
    if _depth_over(document, MAX_DEPTH):
        raise BadJson(f"the body nests more than {MAX_DEPTH} levels deep")
    return document


def _depth_over(document: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` deep (iterative: no recursion to fail)."""
    stack: list[tuple[Any, int]] = [(document, 1)] if isinstance(document, dict | list) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
