"""Property: any HL7 v2 input (the conformance samples mutated field by field and byte by byte)
gives one change per message with errors naming the segment-field, never an escaped exception,
and an ACK that is always well-formed; over MLLP every frame is answered on a connection that
stays open."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given

from reminder_service.bootstrap import Service
from reminder_service.entrypoints.mllp import MllpServer
from reminder_service.services.hl7_import import apply_siu
from tests.factories import listening_on_a_thread
from tests.property.hostile import DEFAULTS, check_siu, hl7_message, mllp_round_trip

pytestmark = pytest.mark.property


@given(hl7_message(bytewise=False))
def test_any_field_wise_mutation_maps_or_names_the_field(message: bytes) -> None:
    check_siu(message, personal_data_checked=True)


@given(hl7_message())
def test_any_byte_wise_mutation_maps_or_is_refused(message: bytes) -> None:
    check_siu(message, personal_data_checked=False)


@pytest.fixture
def connection(service: Service) -> Iterator[socket.socket]:
    """One connection to a real listener that applies each message to the database."""

    def handle(frame: bytes) -> tuple[str, str]:
        results, _ = apply_siu(service.importer, frame, DEFAULTS, label="mllp-property")
        worst = max(results, key=lambda r: ("AA", "AE", "AR").index(r.ack), default=None)
        return (worst.ack, worst.text) if worst else ("AR", "no HL7 message in the frame")

    with (
        listening_on_a_thread(MllpServer(handle, "127.0.0.1", 0)) as port,
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        sock.settimeout(30)
        yield sock


@given(message=hl7_message())
def test_the_listener_answers_every_frame_and_keeps_the_connection(
    connection: socket.socket, message: bytes
) -> None:
    mllp_round_trip(connection, message)
