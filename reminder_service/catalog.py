"""Protocols by procedure code, and the clinic each appointment belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from .configuration.clinics import Clinics
from .domain.protocol import Protocol


@dataclass(frozen=True, slots=True)
class Catalog:
    protocols: tuple[Protocol, ...]
    clinics: Clinics

    def protocol_for(self, procedure: str) -> Protocol | None:
        code = procedure.strip().upper()
        for protocol in self.protocols:
            if code in protocol.procedure_codes:
                return protocol
        return None

    def protocol(self, protocol_id: str) -> Protocol:
        for protocol in self.protocols:
            if protocol.id == protocol_id:
                return protocol
        raise KeyError(protocol_id)
