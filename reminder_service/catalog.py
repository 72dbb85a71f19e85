"""The configuration: protocols by procedure code, the clinics, the delivery failure table."""

from __future__ import annotations

from dataclasses import dataclass, field

from .configuration.clinics import Clinics
from .domain.failure_rules import FailureTable
from .domain.protocol import Protocol


@dataclass(frozen=True, slots=True)
class Catalog:
    protocols: tuple[Protocol, ...]
    clinics: Clinics
    failures: FailureTable = field(default_factory=lambda: FailureTable(()))  # delivery failures

    def protocol_for(self, procedure: str) -> Protocol | None:
        code = procedure.strip().upper()
        for protocol in self.protocols:
            if code in protocol.procedure_codes:
                return protocol
        return None

    def protocol_or_none(self, protocol_id: str | None) -> Protocol | None:
        for protocol in self.protocols:
            if protocol.id == protocol_id:
                return protocol
        return None

    def protocol(self, protocol_id: str) -> Protocol:
        for protocol in self.protocols:
            if protocol.id == protocol_id:
                return protocol
        raise KeyError(protocol_id)
