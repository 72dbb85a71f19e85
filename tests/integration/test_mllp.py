"""The MLLP listener on a real socket: frames split across packets or several per packet,
garbage and half-frames between them, oversized frames, many connections; each message answered
with an ACK carrying its control id, and applied."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from reminder_service.bootstrap import Service
from reminder_service.entrypoints.mllp import MAX_FRAME, MllpServer
from reminder_service.importers.csv_rows import ImportDefaults
from reminder_service.importers.hl7_ack import build_ack
from reminder_service.services.hl7_import import apply_siu
from reminder_service.store.tables import appointments, audit_log
from tests.factories import listening_on_a_thread

SAMPLES = Path(__file__).parents[1] / "conformance" / "hl7"  # from ../shared/conformance
DEFAULTS = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def framed(message: bytes) -> bytes:
    return b"\x0b" + message + b"\x1c\r"


@pytest.fixture
def listener(service: Service) -> Iterator[int]:
    def handle(frame: bytes) -> tuple[str, str]:
        results, _ = apply_siu(service.importer, frame, DEFAULTS, label="mllp-test")
        return results[0].ack, results[0].text

    with listening_on_a_thread(MllpServer(handle, "127.0.0.1", 0)) as port:
        yield port


def acks(sock: socket.socket, count: int) -> list[dict[str, str]]:
    """Read `count` framed ACKs; each as {code, control_id, text}."""
    data, found = b"", []
    sock.settimeout(30)
    while len(found) < count:
        chunk = sock.recv(65536)
        assert chunk, "the listener closed the connection"
        data += chunk
        while b"\x1c\r" in data:
            frame, data = data.split(b"\x1c\r", 1)
            segments = frame.lstrip(b"\x0b").decode().split("\r")
            msa = next(s for s in segments if s.startswith("MSA")).split("|")
            found.append(
                {"code": msa[1], "control_id": msa[2], "text": msa[3] if len(msa) > 3 else ""}
            )
    return found


def stored(service: Service) -> dict[str, Any]:
    with service.engine.connect() as conn:
        return dict(conn.execute(select(appointments.c.external_id, appointments.c.status)).all())


def test_split_and_batched_frames_with_garbage_between_are_each_acknowledged(
    service, listener
) -> None:  # type: ignore[no-untyped-def]
    book = sample("renalware-barts-siu-s12-new-booking.hl7")
    cancel = sample("renalware-barts-siu-s15-cancel.hl7")
    no_contact = sample("msfc-siu-s12-biopsy-tq1-pv1-dg1.hl7")
    with socket.create_connection(("127.0.0.1", listener)) as sock:
        whole = framed(book)
        sock.sendall(b"garbage before any frame\r\n")  # never answered, never crashes it
        for part in (whole[:7], whole[7:60], whole[60:]):  # one frame in three packets
            sock.sendall(part)
        sock.sendall(framed(cancel) + b"\x0bhalf a frame" + framed(no_contact))  # two in one
        answers = acks(sock, 3)
    assert [(a["code"], a["control_id"]) for a in answers] == [
        ("AA", "Q166323123117"),
        ("AA", cancel.split(b"|")[9].decode()),
        ("AE", "MSG00012"),
    ]
    assert "PID-13" in answers[2]["text"]  # why it was not applied, without patient data
    assert stored(service) == {"149549015": "booked", "149549027": "cancelled"}


def test_an_oversized_frame_is_refused_and_the_connection_goes_on(service, listener) -> None:  # type: ignore[no-untyped-def]
    with socket.create_connection(("127.0.0.1", listener)) as sock:
        sock.sendall(b"\x0b" + b"X" * (MAX_FRAME + 10) + b"\x1c\r")
        sock.sendall(framed(sample("renalware-barts-siu-s12-new-booking.hl7")))
        answers = acks(sock, 2)
    assert [a["code"] for a in answers] == ["AR", "AA"]


def test_many_connections_at_once_and_a_dropped_one(service, listener) -> None:  # type: ignore[no-untyped-def]
    with socket.create_connection(("127.0.0.1", listener)) as dropped:
        dropped.sendall(b"\x0bMSH|^~\\&|half")  # then gone
    messages = [
        sample("renalware-barts-siu-s12-new-booking.hl7").replace(b"149549015", f"9000{i}".encode())
        for i in range(8)
    ]
    results: dict[int, str] = {}

    def send(i: int) -> None:
        with socket.create_connection(("127.0.0.1", listener)) as sock:
            sock.sendall(framed(messages[i]))
            results[i] = acks(sock, 1)[0]["code"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == dict.fromkeys(range(8), "AA")
    assert {k for k in stored(service) if k.startswith("9000")} == {f"9000{i}" for i in range(8)}


def test_an_ack_names_the_control_id_and_uses_the_senders_separators() -> None:
    message = b"MSH#^~\\&#SEND#FAC#RECV#RFAC#20260101120000##SIU^S12#CTRL42#P#2.5\rSCH#1"
    ack = build_ack(message, "AE", "SCH-11.4: not a timestamp").decode()
    msh, msa, err = ack.strip("\r").split("\r")
    assert msh.startswith("MSH#^~\\&#RECV#RFAC#SEND#FAC#") and "#ACK^S12^ACK#" in msh
    assert msa == "MSA#AE#CTRL42#SCH-11.4: not a timestamp"
    assert err.startswith("ERR#") and err.endswith("SCH-11.4: not a timestamp")
    assert build_ack(b"not hl7 at all", "AR", "unreadable").decode().startswith("MSH|^~\\&|")


def test_an_older_message_arriving_after_a_newer_one_changes_nothing(service: Service) -> None:
    booking = sample("renalware-barts-siu-s12-new-booking.hl7")  # MSH-7 2024-11-06 15:07:01
    cancel = booking.replace(b"SIU^S12", b"SIU^S15").replace(
        b"|20241106150701|", b"|20241106160000|"
    )
    moved = (
        booking.replace(b"SIU^S12", b"SIU^S13")
        .replace(b"|20241106150701|", b"|20241106155000|")  # sent before the cancellation...
        .replace(b"^20241106120000^", b"^20241107120000^")
    )
    for message in (booking, cancel, moved):  # ...but it arrives after it
        results, _ = apply_siu(service.importer, message, DEFAULTS, label="order")
        assert results[0].ack == "AA"
    assert stored(service) == {"149549015": "cancelled"}
    _, summary = apply_siu(service.importer, moved, DEFAULTS, label="again")
    assert summary.out_of_order == 1
    with service.engine.connect() as conn:
        events = conn.execute(select(audit_log.c.event)).scalars().all()
    assert events.count("out_of_order") == 2
    # The original booking replayed (an engine resending its queue) is older too.
    assert apply_siu(service.importer, booking, DEFAULTS)[1].out_of_order == 1
    assert stored(service) == {"149549015": "cancelled"}


def final_state(service: Service) -> dict[str, tuple[str, str, str]]:
    """external id -> (status, start in UTC, location) of every stored appointment."""
    columns = (appointments.c.status, appointments.c.start_at, appointments.c.location)
    with service.engine.connect() as conn:
        rows = conn.execute(select(appointments.c.external_id, *columns)).all()
    return {r.external_id: (r.status, r.start_at.isoformat(), r.location) for r in rows}


# The first conformance samples (the later public ones go over MLLP, each to its own clinic, in
# tests/integration/test_public_samples.py). Those applied are answered AA; the others book with
# test numbers only, so they are answered AE.
FIRST_SAMPLES = {
    "embe7-siu-s17-no-rgs-tq1.hl7",
    "msfc-siu-s12-biopsy-tq1-pv1-dg1.hl7",
    "msfc-siu-s12-checkup-three-rgs.hl7",
    "msfc-siu-s13-reschedule.hl7",
    "msfc-siu-s14-room-change.hl7",
    "msfc-siu-s15-cancel.hl7",
    "msfc-siu-s17-delete.hl7",
    "msfc-siu-s26-noshow.hl7",
    "pacsbridge-siu-s15-cr-misplaced-sch-fields.hl7",
    "renalware-barts-siu-s12-new-booking.hl7",
    "renalware-barts-siu-s13-reschedule.hl7",
    "renalware-barts-siu-s15-cancel.hl7",
    "renalware-barts-siu-s26-dna.hl7",
}
APPLIED_SAMPLES = {
    "embe7-siu-s17-no-rgs-tq1.hl7",
    "msfc-siu-s15-cancel.hl7",
    "msfc-siu-s17-delete.hl7",
    "msfc-siu-s26-noshow.hl7",
    "pacsbridge-siu-s15-cr-misplaced-sch-fields.hl7",
    "renalware-barts-siu-s12-new-booking.hl7",
    "renalware-barts-siu-s13-reschedule.hl7",
    "renalware-barts-siu-s15-cancel.hl7",
    "renalware-barts-siu-s26-dna.hl7",
}
BARTS_OPD = "RNJ Renal OPD, RNJ ROYALLONDON, RNJ MainBld RLH"
SAMPLES_END_STATE = {
    "149549015": ("booked", "2024-11-06T12:00:00+00:00", BARTS_OPD),
    "149549023": ("booked", "2024-11-06T11:30:00+00:00", BARTS_OPD),  # the S13's new time
    "149549027": ("cancelled", "2024-11-13T10:00:00+00:00", "RNJ Renal SBH, RNJ BARTS, RNJ KGV"),
    "36996": ("cancelled", "2021-09-24T07:15:00+00:00", "055, Room01, GH Clinic"),
    "APPTID123": ("cancelled", "2021-04-06T12:30:00+00:00", ""),
    "APPT001": ("cancelled", "2024-01-20T10:00:00+00:00", ""),
}


@pytest.mark.parametrize("order", ["as sent", "reversed"])
def test_an_independent_client_python_hl7_sends_the_samples_in_and_out_of_order(
    service: Service, listener: int, order: str
) -> None:
    """python-hl7's MLLP client sends every sample, with garbage and a half frame before each;
    every message gets its ACK, and the end state is the same whatever the order. The listener's
    framing (`mllp.py`) is our own, so this client checks it independently."""
    import hl7  # noqa: PLC0415
    from hl7.client import MLLPClient  # noqa: PLC0415

    names = sorted(FIRST_SAMPLES)  # each sender's own order
    if order == "reversed":  # cancellations and no-shows before their bookings
        names.reverse()
    codes = {}
    with MLLPClient("127.0.0.1", listener) as client:
        for name in names:
            client.socket.sendall(b"noise between frames\r\n\x0bMSH|^~\\&|half a frame")
            answer = client.send_message(sample(name))
            ack = hl7.parse(answer.decode() if isinstance(answer, bytes) else answer)
            codes[name] = str(ack.segment("MSA")[1])
            control = str(hl7.parse(sample(name).decode("latin-1")).segment("MSH")[10])
            assert str(ack.segment("MSA")[2]) == control, name
    assert {n for n, code in codes.items() if code == "AA"} == APPLIED_SAMPLES
    assert set(codes.values()) <= {"AA", "AE"}  # AE: only test phone numbers, nothing usable
    assert final_state(service) == SAMPLES_END_STATE
