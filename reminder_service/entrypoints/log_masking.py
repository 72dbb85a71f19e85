"""Mask phone numbers and email addresses in every log line, whatever put them there.

The service logs ids, not patient data; this filter is the second line of defence for text that
comes from elsewhere (a provider's error message quoting the number it rejected, say).
"""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# International or national numbers with 7+ digits, allowing spaces, dots, dashes and brackets;
# not ISO dates (2026-12-09), which logs need.
_PHONE = re.compile(r"(?<![\w(])(?!\d{4}-\d\d-\d\d)(\+?\(?\d[\d ().-]{5,}\d)(?![\w])")


def mask(text: str) -> str:
    text = _EMAIL.sub(lambda m: f"{m[1]}***@{m[2]}", text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match[str]) -> str:
    raw = match[1]
    digits = [c for c in raw if c.isdigit()]
    if len(digits) < 7:
        return raw
    return f"{'+' if raw.startswith('+') else ''}{'*' * (len(digits) - 3)}{''.join(digits[-3:])}"


class MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask(record.exc_text)
        return True


def install() -> None:
    """Put the filter on every handler of the root logger."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(MaskingFilter())
