"""Staff accounts: created by `reminder-service user create NAME --role ...`, disabled with
`user disable NAME`; a password is checked against its argon2id hash (argon2-cffi, with its
RFC 9106 defaults).

A sign-in for a name that does not exist, or is disabled, still verifies against a hash, so the
time taken does not tell which names exist. A hash made with older parameters is replaced at the
next sign-in that proves the password.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..clock import Clock
from ..domain.staff import Role, name_problem, password_problem
from ..store import staff_users

if TYPE_CHECKING:
    from sqlalchemy import Engine


class UserRefused(ValueError):
    """An account not created, and why (never quoting the password)."""


@dataclass(frozen=True, slots=True)
class StaffUser:
    name: str
    role: Role


class StaffUsers:
    def __init__(self, engine: Engine, clock: Clock, hasher: PasswordHasher | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self._hasher = hasher or PasswordHasher()

    @cached_property
    def _decoy(self) -> str:
        """A hash to verify against when there is no account: made at the first sign-in check
        (whatever its name), not at every construction (`user create` needs none)."""
        return self._hasher.hash("a password no account has")

    def create(self, name: str, role: Role, password: str) -> StaffUser:
        """Raises UserRefused for a bad name or password, or a name taken."""
        problem = name_problem(name) or password_problem(password)
        if problem:
            raise UserRefused(problem)
        if not staff_users.add(
            self._engine, name, role.value, self._hasher.hash(password), self._clock()
        ):
            raise UserRefused(f"a user named {name!r} exists already")
        return StaffUser(name, role)

    def disable(self, name: str) -> bool:
        """Disable `name` at once: it can no longer sign in. False when no enabled one."""
        return staff_users.disable(self._engine, name, self._clock())

    def verify(self, name: str, password: str) -> StaffUser | None:
        """The enabled user `name` if `password` is theirs, else None."""
        decoy = self._decoy  # first: the first check costs the same whether the name exists
        stored = staff_users.find(self._engine, name) if not name_problem(name) else None
        checked = stored.password_hash if stored is not None else decoy
        try:
            self._hasher.verify(checked, password)
        except (VerificationError, InvalidHashError):
            return None
        if stored is None or stored.disabled:
            return None
        if self._hasher.check_needs_rehash(stored.password_hash):
            staff_users.set_hash(self._engine, name, self._hasher.hash(password), self._clock())
        return StaffUser(stored.name, Role(stored.role))
