"""What went wrong with a send, as facts a channel reports: the failure table (`failure_rules`)
decides what they mean, so channels and the domain share this vocabulary without one importing
the other."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    HTTP = "http"  # the provider answered with an error status (and maybe its own code)
    SMTP = "smtp"  # the mail server answered with an error reply
    TIMEOUT = "timeout"  # no answer in time: the message may or may not have been accepted
    CONNECTION = "connection"  # could not reach the provider at all
    LOCAL = "local"  # our side: a full disk, a bad certificate file


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong, as facts. Never a message body or a patient's contact details."""

    provider: str  # "twilio", "smtp", "outbox"
    kind: FailureKind
    status: int | None = None  # HTTP status or SMTP reply code
    code: str | None = None  # the provider's own error code, e.g. Twilio's "21211"
    detail: str = ""
    # The request may have reached the provider before the answer was lost (a read timeout, a
    # dropped connection): the message may already be on its way.
    maybe_accepted: bool = False

    def describe(self) -> str:
        parts = [self.provider, self.kind.value]
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(f"code {self.code}")
        text = " ".join(parts)
        return f"{text}: {self.detail}" if self.detail else text
