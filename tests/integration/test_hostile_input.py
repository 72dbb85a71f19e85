"""Hostile input against the database, the MLLP listener and the API (SQLite and PostgreSQL):
nothing over-long reaches a column, a file refused whole writes nothing, every frame is
answered, and bodies that used to be a 500 are a clear 4xx. All data is synthetic."""

from __future__ import annotations

import csv
import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import Cancellation
from reminder_service.domain.start_range import OUT_OF_RANGE
from reminder_service.entrypoints import cli
from reminder_service.entrypoints import mllp as mllp_module
from reminder_service.entrypoints.mllp import MllpServer
from reminder_service.importers.csv_mapping import LAYOUT_FIELDS
from reminder_service.importers.csv_rows import FileRejected, RowError
from reminder_service.services.api_keys import ApiKeys
from reminder_service.services.csv_import import import_csv_file
from reminder_service.services.hl7_import import apply_siu
from reminder_service.services.importing import ImportSummary
from reminder_service.store.tables import appointments, patients
from tests.factories import appointment, listening_on_a_thread, patient
from tests.property.hostile import DEFAULTS, HL7_SAMPLES, counts, mllp_round_trip
from tests.unit.test_hostile_input import BROKEN_MSH

HEADER = ",".join(LAYOUT_FIELDS)
ROW = "H1,HP1,Test,Patient,07700 900123,,,,BMBX,2026-12-03T09:30,45,Day Unit,yes,no,booked"


# --- the last guard, where appointments are applied -------------------------------------------


def test_an_appointment_too_long_for_its_columns_never_reaches_the_database(
    service: Service,
) -> None:
    field_problem = appointment(external_id="A" * 500, patient=patient(first_name="N" * 101))
    fine = appointment(external_id="A2", patient=patient(external_id="P2"))
    summary = service.importer.apply([(1, field_problem), (2, fine)], source="test", label="guard")
    assert summary.imported == 1 and summary.rejected == 1
    assert [(e.line, e.column) for e in summary.errors] == [
        (1, "appointment_id"),
        (1, "first_name"),
    ]
    with service.engine.connect() as conn:
        assert conn.execute(select(appointments.c.external_id)).scalars().all() == ["A2"]


def test_a_start_outside_the_plausible_years_never_reaches_planning(service: Service) -> None:
    early = appointment(external_id="OLD", start=datetime(1, 1, 3, 9, 0, tzinfo=UTC))
    late = appointment(external_id="NEW", start=datetime(9999, 12, 31, 9, 0, tzinfo=UTC))
    summary = service.importer.apply([(1, early), (2, late)], source="test", label="guard")
    assert summary.errors == [
        RowError(1, "start", OUT_OF_RANGE),
        RowError(2, "start", OUT_OF_RANGE),
    ]
    assert counts(service.engine)["appointments"] == 0


def test_a_cancellation_by_an_over_long_id_is_refused(service: Service) -> None:
    summary = service.importer.apply([(1, Cancellation("C" * 65))], source="test", label="guard")
    assert summary.rejected == 1 and summary.cancel_not_found == 0
    assert [e.column for e in summary.errors] == ["appointment_id"]


def test_a_patient_too_long_for_its_columns_is_not_saved(service: Service) -> None:
    saved = service.importer.save_patients(
        [("f" * 65, patient(external_id="LONGID")), ("ok", patient(last_name="L" * 101)),
         ("fine", patient(external_id="P9"))]
    )  # fmt: skip
    assert saved == 1
    with service.engine.connect() as conn:
        assert conn.execute(select(patients.c.external_id)).scalars().all() == ["P9"]


def test_a_500_character_appointment_id_in_a_csv_is_a_row_error(
    service: Service, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f"{HEADER}\n{ROW.replace('H1', 'A' * 500, 1)}\n{ROW.replace('H1', 'H2')}\n")
    summary = import_csv_file(path, service.importer, DEFAULTS, workers=0)
    assert summary.imported == 1
    assert [(e.line, e.column, e.reason) for e in summary.errors] == [
        (2, "appointment_id", "is 500 characters long; at most 64 are stored")
    ]


def test_a_nul_character_never_reaches_a_text_column(service: Service, tmp_path: Path) -> None:
    """PostgreSQL refuses 0x00 in any text: it was a DataError that failed the whole import."""
    path = tmp_path / "export.csv"
    nul_id, nul_name = ROW.replace("H1", "H\x001", 1), ROW.replace("Test", "T\x00")
    path.write_text(f"{HEADER}\n{nul_id}\n{nul_name}\n")
    summary = import_csv_file(path, service.importer, DEFAULTS, workers=0)
    assert [(e.line, e.column) for e in summary.errors] == [
        (2, "appointment_id"),
        (3, "first_name"),
    ]
    assert all("NUL" in e.reason for e in summary.errors)
    guarded = service.importer.apply(
        [(1, appointment(location="Day\x00Unit")), (2, Cancellation("C\x00"))],
        source="test", label="guard",
    )  # fmt: skip
    assert [(e.line, e.column) for e in guarded.errors] == [(1, "location"), (2, "appointment_id")]
    assert counts(service.engine)["appointments"] == 0


def test_an_hl7_id_holding_a_nul_is_refused_naming_its_field(service: Service) -> None:
    sample = next(s for s in HL7_SAMPLES if b"SIU^S12" in s)
    segments = [
        b"|".join([*seg.split(b"|")[:2], b"F\x00ID", *seg.split(b"|")[3:]])
        if seg.startswith(b"SCH|") else seg
        for seg in sample.split(b"\r")
    ]  # fmt: skip
    [result], _ = apply_siu(service.importer, b"\r".join(segments), DEFAULTS, label="nul")
    assert result.ack == "AE" and "SCH-2.1: holds a NUL character" in result.text


# --- files refused whole ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", f"{HEADER}\r\n".encode()])
def test_an_empty_bom_only_or_header_only_csv_writes_nothing(
    service: Service, tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    with pytest.raises(FileRejected):
        import_csv_file(path, service.importer, DEFAULTS, workers=0)
    assert counts(service.engine) == {
        "imports": 0, "appointments": 0, "patients": 0, "reminders": 0,
    }  # fmt: skip


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"\x0b\x1c\r"])
def test_hl7_input_without_a_message_writes_nothing(service: Service, data: bytes) -> None:
    results, summary = apply_siu(service.importer, data, DEFAULTS, label="empty.hl7")
    assert results == [] and summary.import_id is None
    assert counts(service.engine)["imports"] == 0


# --- the MLLP listener ------------------------------------------------------------------------


@pytest.fixture
def mllp(service: Service) -> Iterator[socket.socket]:
    def handle(frame: bytes) -> tuple[str, str]:
        results, _ = apply_siu(service.importer, frame, DEFAULTS, label="mllp-test")
        worst = max(results, key=lambda r: ("AA", "AE", "AR").index(r.ack), default=None)
        return (worst.ack, worst.text) if worst else ("AR", "no HL7 message in the frame")

    with (
        listening_on_a_thread(MllpServer(handle, "127.0.0.1", 0)) as port,
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
    ):
        yield sock


def test_every_broken_frame_is_answered_and_the_connection_keeps_serving(
    mllp: socket.socket,
) -> None:
    codes = [mllp_round_trip(mllp, frame) for frame in BROKEN_MSH]
    assert set(codes) <= {"AE", "AR"}  # refused, never applied, never unanswered
    good = next(s for s in HL7_SAMPLES if b"SIU^S12" in s and b"renalware" in s.lower())
    assert mllp_round_trip(mllp, good) == "AA"  # the same connection, still served


def test_the_listener_answers_even_if_an_ack_cannot_be_built_from_the_message(
    mllp: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mllp_module.build_ack

    def failing(message: bytes, code: str, text: str = "") -> bytes:
        if message:
            raise IndexError("an unforeseen message shape")
        return real(message, code, text)

    monkeypatch.setattr(mllp_module, "build_ack", failing)
    good = next(s for s in HL7_SAMPLES if b"SIU^S12" in s)
    assert mllp_round_trip(mllp, good) in ("AE", "AR")
    assert mllp_round_trip(mllp, good) in ("AE", "AR")  # and the connection is still served


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("hostile")
    with TestClient(service.http_app()) as client:
        yield client, {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("path", ["/appointments", "/fhir", "/fhir/Appointment"])
@pytest.mark.parametrize("levels", [65, 100_000])
def test_deeply_nested_json_is_a_400_naming_the_limit(api, path: str, levels: int) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = client.post(path, content=b"[" * levels + b"]" * levels, headers=auth)
    assert answer.status_code == 400
    assert "nests more than 64 levels deep" in answer.text


def test_an_empty_list_or_a_batch_refused_whole_writes_nothing(service: Service, api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    assert client.post("/appointments", json=[], headers=auth).status_code == 422
    bad = {"appointment_id": "B1", "patient_id": "P1", "procedure": "BMBX",
           "start": "0001-01-01T00:00", "mobile": "07700 900123"}  # fmt: skip
    answer = client.post("/appointments", json=[bad, {**bad, "appointment_id": "B2"}], headers=auth)
    assert answer.status_code == 422
    assert [(e["index"], e["field"]) for e in answer.json()["errors"]] == [
        (0, "start"), (1, "start"),
    ]  # fmt: skip
    assert answer.json()["summary"]["rejected"] == 2
    assert counts(service.engine)["imports"] == 0  # no import record for a refused request


def test_a_json_appointment_id_longer_than_its_column_is_a_422_naming_it(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    item = {"appointment_id": "A" * 500, "patient_id": "P1", "procedure": "BMBX",
            "start": "2026-12-03T09:30", "mobile": "07700 900123"}  # fmt: skip
    answer = client.post("/appointments", json=item, headers=auth)
    assert answer.status_code == 422
    assert [(e["index"], e["field"]) for e in answer.json()["errors"]] == [(0, "appointment_id")]
    assert "at most 64 characters" in answer.json()["errors"][0]["reason"]


@pytest.mark.parametrize(
    "document",
    [
        {"resourceType": "Bundle", "type": ["batch"]},
        {"resourceType": "Bundle", "type": "batch", "entry": 5},
        {"resourceType": "Bundle", "type": "batch", "entry": "x"},
    ],
)
def test_a_fhir_bundle_with_wrongly_typed_values_is_a_4xx(service: Service, api, document) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = client.post("/fhir", content=json.dumps(document).encode(), headers=auth)
    assert answer.status_code == 422
    assert answer.json()["issue"][0]["expression"][0].startswith("Bundle.")
    assert counts(service.engine)["imports"] == 0


def test_a_fhir_cancellation_with_a_lone_surrogate_in_its_id_is_a_400(
    service: Service, api
) -> None:  # type: ignore[no-untyped-def]
    """Was a 500: the cancellation's id, read from the raw JSON, could not be sent to the
    database (it is no text any encoding can hold)."""
    client, auth = api
    document = {"resourceType": "Appointment", "status": "cancelled",
                "identifier": [{"value": "C\ud800"}]}  # fmt: skip
    answer = client.post("/fhir", content=json.dumps(document).encode(), headers=auth)
    assert answer.status_code == 400
    assert "lone surrogate" in answer.json()["issue"][0]["diagnostics"]
    assert counts(service.engine)["imports"] == 0


@pytest.mark.parametrize(("method", "path"), [("get", "/appointments/A%00"),
                                            ("post", "/appointments/A%00/cancel")])  # fmt: skip
def test_an_id_holding_a_nul_is_not_found(api, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    assert getattr(client, method)(path, headers=auth).status_code == 404  # was a 500 on PostgreSQL


@pytest.mark.parametrize(
    "document",
    [
        {"resourceType": "Appointment", "status": "cancelled", "identifier": [{"value": "C\x00"}]},
        {"resourceType": "Appointment", "status": "booked", "id": "a1",
         "start": "2026-12-03T09:30:00Z", "serviceType": [{"coding": [{"code": "BMBX"}]}],
         "participant": [{"actor": {"reference": "Patient/x\x00"}, "status": "accepted"}]},
    ],
)  # fmt: skip
def test_fhir_ids_holding_a_nul_are_refused(service: Service, api, document) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = client.post("/fhir", content=json.dumps(document).encode(), headers=auth)
    assert answer.status_code == 422  # was a 500 on PostgreSQL
    assert counts(service.engine)["imports"] == 0


# --- CSV written by the service ---------------------------------------------------------------


def test_the_errors_csv_neutralises_cells_a_spreadsheet_would_run(tmp_path: Path) -> None:
    summary = ImportSummary(
        rejected=2,
        errors=[RowError(2, '=HYPERLINK("http://example.org","x")', "-1 is not a number"),
                RowError(3, "@cmd", "\t=1+1"), RowError(4, "status", "is empty")],
    )  # fmt: skip
    path = tmp_path / "errors.csv"
    cli._print_summary(summary, path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["line", "column", "reason"],
        ["2", '\'=HYPERLINK("http://example.org","x")', "'-1 is not a number"],
        ["3", "'@cmd", "'\t=1+1"],
        ["4", "status", "is empty"],
    ]


def test_a_reschedule_keeps_working_after_hostile_imports(service: Service) -> None:
    """The guard rejects only the bad item: a normal change after it applies as before."""
    service.importer.apply([(1, appointment(external_id="X" * 65))], source="test", label="bad")
    booked = appointment()
    service.importer.apply([(1, booked)], source="test", label="book")
    moved = replace(booked, start=booked.start.replace(hour=11))
    summary = service.importer.apply([(1, moved)], source="test", label="move")
    assert summary.rescheduled == 1
