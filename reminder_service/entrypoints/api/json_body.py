"""Request bodies parsed as JSON, refused when they nest too deeply or hold text that is not
Unicode.

- Depth: Python's json parser recurses once per level, so `[[[[...` a few thousand deep raises
  RecursionError (a 500), and a body just under that depth recurses again in every validator
  that walks it. No appointment or FHIR document needs much depth: a FHIR Bundle's deepest
  element (entry.resource.participant.actor.identifier.type.coding...) is about a dozen levels
  down. So a body nesting past MAX_DEPTH is a client error.
- Lone surrogates: JSON may escape half of a UTF-16 pair (`"\\ud800"`), which Python reads as a
  string that no encoding can write, so the database driver fails on it wherever it is stored or
  looked up (a FHIR cancellation's id is read from the raw JSON). Such a body is a client error.

Both are found in one walk over the parsed document that uses no recursion of its own.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
TOO_DEEP = f"the body nests more than {MAX_DEPTH} levels deep"
NOT_UNICODE = "the body holds text that is not Unicode (a lone surrogate escape such as \\ud800)"


class BadJson(ValueError):
    """The body is not JSON we accept; the message says why (never quoting it)."""


def parse_json(body: bytes) -> Any:
    try:
        document = json.loads(body)
    except RecursionError:
        raise BadJson(TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError):
        raise BadJson("the body is not JSON") from None
    problem = _problem(document)
    if problem:
        raise BadJson(problem)
    return document


def _problem(document: Any) -> str:
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                return NOT_UNICODE
            continue
        if not isinstance(value, dict | list):
            continue
        if depth + 1 > MAX_DEPTH:
            return TOO_DEEP
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)
    return ""


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
