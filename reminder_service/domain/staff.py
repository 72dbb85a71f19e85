"""Staff who sign in to the console, and what each role may do."""

from __future__ import annotations

import re
from enum import StrEnum

# Shown in the audit trail beside every action a user takes: letters, digits, . _ - only.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# NIST SP 800-63B 5.1.1: memorised secrets of at least 8 characters, and long ones allowed; a
# console with patient data asks for more.
SHORTEST_PASSWORD = 12
LONGEST_PASSWORD = 256


class Role(StrEnum):
    SCHEDULER = "scheduler"  # imports, views and cancels appointments
    ADMIN = "admin"  # also manages users and API keys


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a staff account, or None."""
    if not NAME.fullmatch(name):
        return (
            "a user name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return None


def password_problem(password: str) -> str | None:
    """Why `password` is refused, or None. Never echoes the password."""
    if len(password) < SHORTEST_PASSWORD:
        return f"a password has at least {SHORTEST_PASSWORD} characters"
    if len(password) > LONGEST_PASSWORD:
        return f"a password has at most {LONGEST_PASSWORD} characters"
    if not password.strip():
        return "a password cannot be only spaces"
    return None
