"""How a delivery failure is treated: one table of rules, first match wins.

Channels report facts (provider, kind, status, provider code); this table says whether that is
permanent (never retried) or temporary (retried with backoff until the step's deadline), and
whether it means the recipient opted out. The table lives in config/delivery_failures.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

from .failures import Failure, FailureKind


@dataclass(frozen=True, slots=True)
class StatusPattern:
    """An exact status (429) or a class of them ("5xx" is 500-599)."""

    exact: int | None = None
    hundreds: int | None = None

    @staticmethod
    def parse(text: str | int) -> StatusPattern:
        raw = str(text).strip().lower()
        if len(raw) == 3 and raw[0] in "12345" and raw[1:] == "xx":
            return StatusPattern(hundreds=int(raw[0]))
        if raw.isdigit() and 100 <= int(raw) <= 599:
            return StatusPattern(exact=int(raw))
        raise ValueError(f"{text!r} is not a status; write e.g. 429 or '5xx'")

    def matches(self, status: int | None) -> bool:
        if status is None:
            return False
        if self.exact is not None:
            return status == self.exact
        return status // 100 == self.hundreds


@dataclass(frozen=True, slots=True)
class FailureRule:
    permanent: bool
    meaning: str
    provider: str | None = None  # None: any provider
    kind: FailureKind | None = None
    status: StatusPattern | None = None
    code: str | None = None
    opt_out: bool = False

    def matches(self, failure: Failure) -> bool:
        return (
            (self.provider is None or self.provider == failure.provider)
            and (self.kind is None or self.kind is failure.kind)
            and (self.status is None or self.status.matches(failure.status))
            and (self.code is None or self.code == failure.code)
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    permanent: bool
    opt_out: bool
    meaning: str


@dataclass(frozen=True, slots=True)
class FailureTable:
    rules: tuple[FailureRule, ...]
    default_permanent: bool = False  # no rule matched: retry (a failure we do not know yet)

    def classify(self, failure: Failure) -> Verdict:
        for rule in self.rules:
            if rule.matches(failure):
                return Verdict(rule.permanent, rule.opt_out, rule.meaning)
        kind = "permanent" if self.default_permanent else "temporary"
        return Verdict(self.default_permanent, False, f"not in the failure table: {kind}")
