"""Staff accounts on the real database: argon2id hashes, sign-in checks, disabling."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from reminder_service import bootstrap
from reminder_service.domain.staff import Role
from reminder_service.services.staff_users import StaffUsers, UserRefused
from reminder_service.store.tables import staff_users

# Cheap parameters where a test makes many hashes; the service's own are argon2-cffi's defaults.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def users(service: bootstrap.Service) -> StaffUsers:
    return StaffUsers(service.engine, service.clock, CHEAP)


def test_only_an_argon2id_hash_is_stored(service: bootstrap.Service, users: StaffUsers) -> None:
    users.create("alice", Role.SCHEDULER, PASSWORD)
    with service.engine.connect() as conn:
        (stored,) = conn.execute(select(staff_users.c.password_hash)).scalars()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


def test_the_right_password_signs_in_and_a_wrong_one_does_not(users: StaffUsers) -> None:
    users.create("alice", Role.ADMIN, PASSWORD)
    signed_in = users.verify("alice", PASSWORD)
    assert signed_in is not None and signed_in.role is Role.ADMIN
    assert users.verify("alice", PASSWORD + "!") is None
    assert users.verify("bob", PASSWORD) is None  # no such user: the same answer
    assert users.verify("alice smith", PASSWORD) is None  # not even a possible name


def test_a_disabled_user_cannot_sign_in_even_with_the_right_password(users: StaffUsers) -> None:
    users.create("alice", Role.SCHEDULER, PASSWORD)
    assert users.disable("alice")
    assert users.verify("alice", PASSWORD) is None
    assert not users.disable("alice")  # disabled already
    with pytest.raises(UserRefused, match="exists already"):
        users.create("alice", Role.SCHEDULER, PASSWORD)  # the name stays taken (the audit)


def test_bad_names_and_passwords_and_taken_names_are_refused(users: StaffUsers) -> None:
    with pytest.raises(UserRefused, match="at least 12 characters"):
        users.create("alice", Role.SCHEDULER, "short")
    with pytest.raises(UserRefused, match="user name"):
        users.create("alice smith", Role.SCHEDULER, PASSWORD)
    users.create("alice", Role.SCHEDULER, PASSWORD)
    with pytest.raises(UserRefused, match="exists already"):
        users.create("alice", Role.ADMIN, PASSWORD)


def test_a_hash_made_with_weaker_parameters_is_replaced_at_the_next_sign_in(
    service: bootstrap.Service, users: StaffUsers
) -> None:
    users.create("alice", Role.SCHEDULER, PASSWORD)  # cheap parameters
    current = StaffUsers(service.engine, service.clock)  # argon2-cffi's defaults
    assert current.verify("alice", PASSWORD) is not None
    with service.engine.connect() as conn:
        (stored,) = conn.execute(select(staff_users.c.password_hash)).scalars()
    assert not PasswordHasher().check_needs_rehash(stored)
    assert current.verify("alice", PASSWORD) is not None
