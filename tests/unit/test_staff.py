"""Staff account names and passwords: what is refused, and why."""

from __future__ import annotations

import pytest

from reminder_service.domain.staff import Role, name_problem, password_problem


@pytest.mark.parametrize("name", ["alice", "a.smith", "night_nurse-2", "A" * 64])
def test_plain_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["", " alice", "alice smith", "-alice", "a" * 65, "al\nice"])
def test_names_that_would_read_badly_in_the_audit_trail_are_refused(name: str) -> None:
    assert name_problem(name) is not None


def test_a_short_password_is_refused_without_quoting_it() -> None:
    problem = password_problem("hunter2")
    assert problem == "a password has at least 12 characters"
    assert "hunter2" not in problem


def test_long_passphrases_are_welcome_and_spaces_alone_are_not() -> None:
    assert password_problem("correct horse battery staple") is None
    assert password_problem(" " * 20) == "a password cannot be only spaces"
    assert password_problem("x" * 257) is not None


def test_the_two_roles() -> None:
    assert {r.value for r in Role} == {"scheduler", "admin"}
