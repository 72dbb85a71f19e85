"""Every public sample added in tests/conformance (see SOURCES.md), through the real import path,
with its exact expected outcome: the ACK (AA/AE) and the field an AE names, or the FHIR answer;
the stored appointment's status, start instant, procedure, location and clinic; and the contact
kept (the mobile in E.164 or none, the email or none).

The expectations are the import rules:
- a cancellation or no-show needs only the appointment id; one for an id never seen is AA, audited
  and counted as `cancel_not_found`, never as cancelled;
- a number is read in the country of the clinic the feed belongs to (each sample is imported with
  its country's clinic, over MLLP through the feed's facility map); PID-14 is a mobile only when
  marked so; XTN-4 is an email whenever it holds an address;
- FHIR proposed/pending/waitlist answer 200 with an informational "not booked yet".
Where the code still breaks a rule the test is a strict xfail naming the rule, so it turns into
a failure (remove the mark) once the code follows it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reminder_service.bootstrap import Service
from reminder_service.entrypoints.mllp import MllpServer
from reminder_service.importers.csv_rows import ImportDefaults
from reminder_service.importers.hl7v2_siu import FieldRef, SiuMapping, load_siu_mapping
from reminder_service.services.api_keys import ApiKeys
from reminder_service.services.fhir_import import apply_fhir
from reminder_service.services.hl7_import import SiuResult, apply_siu
from reminder_service.services.importing import ImportSummary
from reminder_service.store import records
from reminder_service.store.tables import appointments, audit_log
from tests.factories import listening_on_a_thread

CONFORMANCE = Path(__file__).parents[1] / "conformance"
HL7 = CONFORMANCE / "hl7"
FHIR = CONFORMANCE / "fhir"

# The clinic each feed belongs to (config/clinics.yaml): UK feeds to riverside, US ones to
# lakeside. The French and Qatari samples go to the UK clinic: their numbers must never be
# guessed into the UK (or any other) region, only dropped.
GB = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
US = ImportDefaults("lakeside", "America/Chicago", "US", "en-US")

# Site mappings, as a clinic would write them in YAML, for senders that carry the procedure
# only as text (Patients Know Best: SCH-7.2) or as the booking motive (Clicrdv: SCH-6.1).
PKB_MAPPING = replace(SiuMapping(), procedure=(FieldRef.parse("SCH-7.2"),))
CLICRDV_MAPPING = replace(SiuMapping(), procedure=(FieldRef.parse("SCH-6.1"),))


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@dataclass(frozen=True)
class Stored:
    """An appointment as stored, with the contact kept for its patient."""

    external_id: str
    clinic: str
    status: str
    start: datetime
    procedure: str
    location: str
    mobile: str | None
    email: str | None


@dataclass(frozen=True)
class Hl7Case:
    sample: str
    defaults: ImportDefaults
    ack: str
    stored: Stored | None = None  # the appointment after the sample was applied
    named: tuple[str, ...] = ()  # what an AE's text must name
    absent: str = ""  # an id that must not be stored at all (an AE applies nothing)
    mapping: SiuMapping | None = None
    before: tuple[str, ...] = ()  # samples applied first, with the same defaults and mapping


PKB_BOOKED = Stored(
    external_id="ID123",  # SCH-1: PKB sends no SCH-2
    clinic="riverside",
    status="booked",
    start=utc(2014, 11, 20, 12, 31),  # SCH-11.4 201411201231, naive London time (GMT)
    procedure="CHECKUP",  # SCH-7.2 through the site mapping
    location="health centre",  # PV1-3.9, the location description
    mobile="+447123456789",  # PID-13 07123456789^PRS; 01234567890^PRN is a landline
    email="john.smith@company.com",  # PID-14 ^NET^^address (XTN-4)
)
NTIERPRISE = Stored(
    external_id="13030",
    clinic="lakeside",
    status="booked",
    start=utc(2019, 4, 23, 19, 0),  # SCH-11.4 14:00 naive, Chicago summer time
    procedure="OFFICE VISIT-15",  # SCH-7.1 (no AIS)
    location="MainOffi, Healthmatics Clinic",  # PV1-3.1 and PV1-3.9
    mobile=None,  # (919)007-0007 invalid, (777)707-0707 CP invalid, PID-14 is a business line
    email="007@britishsecretservice.com",  # ^NET^X.400^address
)

HL7_CASES = [
    pytest.param(
        Hl7Case(
            "pkb-siu-s12-pid-first-sch1-reason-text-only.hl7",
            GB,
            "AE",
            named=("AIS-3.1/SCH-7.1/SCH-8.1",),  # only SCH-7.2 holds text
            absent="ID123",
        ),
        id="pkb-s12-default-mapping",
    ),
    pytest.param(
        Hl7Case(
            "pkb-siu-s12-pid-first-sch1-reason-text-only.hl7",
            GB,
            "AA",
            stored=PKB_BOOKED,
            mapping=PKB_MAPPING,
        ),
        id="pkb-s12-site-mapping",
    ),
    pytest.param(
        Hl7Case(
            "pkb-siu-s13-update-new-location.hl7",
            GB,
            "AA",
            stored=replace(PKB_BOOKED, location="new health centre"),  # its update: PV1-3.9
            mapping=PKB_MAPPING,
            before=("pkb-siu-s12-pid-first-sch1-reason-text-only.hl7",),
        ),
        id="pkb-s13-after-s12",
    ),
    pytest.param(
        Hl7Case(
            "pkb-siu-s13-email-in-xtn1.hl7",
            GB,
            "AA",
            # PID-13 XTN-1 with NET; PV1-3.9 the new location
            stored=replace(
                PKB_BOOKED, email="john.smith@hotmail.com", location="new health centre"
            ),
            mapping=PKB_MAPPING,
        ),
        id="pkb-s13-email-in-xtn1",
    ),
    pytest.param(
        Hl7Case(
            "pkb-siu-s15-cancel-sch1-only.hl7",
            GB,
            "AA",
            stored=replace(PKB_BOOKED, status="cancelled"),
            mapping=PKB_MAPPING,
            before=("pkb-siu-s12-pid-first-sch1-reason-text-only.hl7",),
        ),
        id="pkb-s15-sch1-only-cancels",
    ),
    pytest.param(
        Hl7Case(
            "pkb-siu-s26-dna-sch1-only.hl7",
            GB,
            "AA",
            stored=replace(PKB_BOOKED, status="cancelled"),  # a no-show stops the plan
            mapping=PKB_MAPPING,
            before=("pkb-siu-s12-pid-first-sch1-reason-text-only.hl7",),
        ),
        id="pkb-s26-sch1-only-stops-the-plan",
    ),
    pytest.param(
        Hl7Case("rethinkhealth-siu-s12-v23-ntierprise.hl7", US, "AA", stored=NTIERPRISE),
        id="ntierprise-s12-v23",
    ),
    pytest.param(
        Hl7Case("rethinkhealth-siu-s12-custom-delimiters.hl7", US, "AA", stored=NTIERPRISE),
        id="ntierprise-s12-custom-delimiters",
    ),
    pytest.param(
        Hl7Case(
            "rethinkhealth-siu-s12-cadence-z-segments-cr.hl7",
            US,
            "AA",
            stored=Stored(
                external_id="120152985",
                clinic="lakeside",
                status="booked",
                start=utc(2021, 9, 17, 14, 45),  # SCH-11.4 09:45 naive, Chicago summer time
                procedure="5072",  # AIS-3.1
                # PV1-3 (no AIL): point of care, room, description (as sent, cut short)
                location="FCMEIJERSUS, FMCCP, Froedtert and Medical College of Wisconsin "
                "FastCare Clinic, Sussex Me*",
                mobile="+15155555552",  # PID-13 home, XTN-2 "P", XTN-3 "7": a US number
                email="walkin.patient@example.com",
            ),
        ),
        id="cadence-s12-z-segments",
    ),
    pytest.param(
        Hl7Case(
            "clicrdv-siu-s12-email-in-xtn4-only.hl7",
            GB,
            "AE",
            named=("AIS-3.1/SCH-7.1/SCH-8.1",),
            absent="49849903800",
        ),
        id="clicrdv-s12-default-mapping",
    ),
    pytest.param(
        Hl7Case(
            "clicrdv-siu-s12-email-in-xtn4-only.hl7",
            GB,
            "AA",
            stored=Stored(
                external_id="49849903800",  # SCH-2.1 of 49849903800^Clicrdv
                clinic="riverside",
                status="booked",
                start=utc(2016, 12, 31, 11, 0),
                procedure="100",  # SCH-6.1 through the site mapping
                location="",
                mobile=None,  # 0100000000 and 0200000000 are French: never read as UK numbers
                email="camille.exemple@example.org",  # 0100000000^^^address: XTN-4 only
            ),
            mapping=CLICRDV_MAPPING,
        ),
        id="clicrdv-s12-email-in-xtn4",
    ),
    pytest.param(
        Hl7Case(
            "msfc-siu-s14-phcc-no-start-no-procedure.hl7",
            GB,
            "AE",
            named=(
                "TQ1-7.1/SCH-11.4/AIS-4.1/AIG-8.1/AIL-6.1/AIP-6.1",
                "AIS-3.1/SCH-7.1/SCH-8.1",
                "PID-13/PID-14",  # 55500000: a Qatari number, dropped, never a UK mobile
            ),
            absent="808725736",
        ),
        id="phcc-s14-nothing-usable",
    ),
    pytest.param(
        Hl7Case(
            "pacsbridge-siu-s12-no-contact-fields-shifted.hl7",
            US,
            "AE",
            named=("PID-13/PID-14",),
            absent="APPT001",
        ),
        id="pacsbridge-s12-no-contact",
    ),
    pytest.param(
        Hl7Case(
            "msfc-siu-s15-v28-three-rgs-sch25-cancelled.hl7",
            US,
            "AA",
            stored=Stored(
                external_id="36996",
                clinic="lakeside",
                status="cancelled",
                start=utc(2021, 8, 18, 9, 15),  # TQ1-7 11:30+02:15 (SCH-11 holds 2020 dates)
                procedure="58410-2",  # the first RGS group's AIS
                location="LabUnit101, Lab Room 01, GHH Hospital",
                mobile=None,  # the booking's contact is kept: the one the test added
                email="adam@example.org",
            ),
            before=("msfc-siu-s12-checkup-three-rgs.hl7",),
        ),
        id="msfc-s15-v28-after-booking",
    ),
]

# Cancellations and no-shows applied with nothing booked under their id.
UNKNOWN_CANCELS = [
    pytest.param("pkb-siu-s15-cancel-sch1-only.hl7", GB, "ID123", id="pkb-s15"),
    pytest.param("pkb-siu-s26-dna-sch1-only.hl7", GB, "ID123", id="pkb-s26"),
    pytest.param("clicrdv-siu-s17-delete.hl7", GB, "49849903800", id="clicrdv-s17"),
    pytest.param("clicrdv-siu-s26-noshow.hl7", GB, "49849903800", id="clicrdv-s26"),
    pytest.param("pacsbridge-siu-s26-no-start.hl7", US, "APPT001", id="pacsbridge-s26"),
    pytest.param("msfc-siu-s15-v28-three-rgs-sch25-cancelled.hl7", US, "36996", id="msfc-s15-v28"),
]

# The booking the Microsoft S15/S17 samples cancel has no usable contact: an email is added to
# its PID-14 (as tests/unit/test_hl7v2_siu.py does) so that it books.
MSFC_EMAIL = (b"7777^^CP", b"7777^^CP~^NET^Internet^adam@example.org")


def sample_bytes(name: str) -> bytes:
    data = (HL7 / name).read_bytes()
    if name == "msfc-siu-s12-checkup-three-rgs.hl7":
        data = data.replace(*MSFC_EMAIL)
    return data


def apply_sample(
    service: Service,
    name: str,
    defaults: ImportDefaults,
    mapping: SiuMapping | None = None,
) -> tuple[SiuResult, ImportSummary]:
    results, summary = apply_siu(
        service.importer, sample_bytes(name), defaults, mapping=mapping, label=name
    )
    [result] = results
    return result, summary


def stored(service: Service, external_id: str) -> Stored | None:
    query = records.select_with_patients().where(appointments.c.external_id == external_id)
    with service.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        return None
    patient = records.patient_of(row)
    return Stored(
        external_id=row["external_id"],
        clinic=row["clinic_id"],
        status=row["status"],
        start=row["start_at"],
        procedure=row["procedure"],
        location=row["location"],
        mobile=patient["mobile"],
        email=patient["email"],
    )


def audit_events(service: Service) -> list[str]:
    with service.engine.connect() as conn:
        return list(conn.execute(select(audit_log.c.event)).scalars())


def assert_reported_not_found(service: Service, summary: dict[str, int]) -> None:
    assert summary["cancelled"] == 0, "a cancel for an unknown id is not a cancellation"
    assert summary.get("cancel_not_found") == 1, summary
    assert "cancel_not_found" in audit_events(service)


# --- HL7 v2: each sample's outcome ------------------------------------------------------------


@pytest.mark.parametrize("case", HL7_CASES)
def test_hl7_sample_outcome(service: Service, case: Hl7Case) -> None:
    for earlier in case.before:
        result, _ = apply_sample(service, earlier, case.defaults, case.mapping)
        assert result.ack == "AA", (earlier, result.text)
    result, _ = apply_sample(service, case.sample, case.defaults, case.mapping)
    assert result.ack == case.ack, result.text
    for where in case.named:
        assert where in result.text, result.text
    if case.absent:
        assert stored(service, case.absent) is None
    if case.stored is not None:
        assert stored(service, case.stored.external_id) == case.stored


@pytest.mark.parametrize(("name", "defaults", "external_id"), UNKNOWN_CANCELS)
def test_hl7_cancel_for_an_unknown_id_is_aa_and_reported_not_found(
    service: Service, name: str, defaults: ImportDefaults, external_id: str
) -> None:
    result, summary = apply_sample(service, name, defaults)
    assert result.ack == "AA", result.text
    assert_reported_not_found(service, summary.counts())
    found = stored(service, external_id)
    assert found is None or found.status != "booked"


def test_hl7_cancel_for_an_unknown_id_with_every_detail_is_acknowledged(service: Service) -> None:
    """The only unknown-id cancellation that today already gets its AA: it carries a start,
    a procedure and a patient."""
    result, _ = apply_sample(service, "msfc-siu-s15-v28-three-rgs-sch25-cancelled.hl7", US)
    assert (result.ack, result.text) == ("AA", "")
    found = stored(service, "36996")
    assert found is None or found.status == "cancelled"


def test_a_us_feed_keeps_us_numbers_and_never_reads_them_as_uk_ones(service: Service) -> None:
    """The Cadence sample's home number, read in the US clinic's region: +1, never +44. The same
    number read with the UK clinic's region is not a UK number, so it is dropped, not guessed."""
    result, _ = apply_sample(service, "rethinkhealth-siu-s12-cadence-z-segments-cr.hl7", US)
    assert result.ack == "AA"
    us = stored(service, "120152985")
    assert us is not None and us.mobile == "+15155555552"
    data = sample_bytes("rethinkhealth-siu-s12-cadence-z-segments-cr.hl7").replace(
        b"120152985|", b"120152986|", 1
    )
    results, _ = apply_siu(service.importer, data, GB, label="cadence-as-uk")
    assert results[0].ack == "AA"  # the email remains
    uk = stored(service, "120152986")
    assert uk is not None and uk.mobile is None and uk.email == "walkin.patient@example.com"


# --- FHIR R4: each sample's outcome -----------------------------------------------------------


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("samples")
    yield TestClient(service.http_app()), {"Authorization": f"Bearer {key}"}


def fhir(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FHIR / name).read_text(encoding="utf-8"))
    return document


def import_summary(answer: Any) -> dict[str, int]:
    counts: dict[str, int] = json.loads(answer.headers["X-Import-Summary"])
    return counts


SAS_BOOKING = "ans-sas-bundle-booked-no-patient.json"
SAS_CANCEL = "ans-sas-bundle-cancelled-no-patient.json"


@pytest.mark.parametrize(
    ("name", "external_id"),
    [
        pytest.param(
            "isik-terminplanung-appointment-proposed.json", "ISiKTerminExample", id="isik"
        ),
        pytest.param("r4-appointment-example-request.json", "123", id="r4-request"),
    ],
)
def test_fhir_proposed_is_200_not_booked_yet_and_stores_nothing(
    service: Service, api: tuple[TestClient, dict[str, str]], name: str, external_id: str
) -> None:
    client, auth = api
    answer = client.post("/fhir/Appointment", json=fhir(name), headers=auth)
    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(
        issue["severity"] == "information" and "not booked" in issue["diagnostics"].lower()
        for issue in outcome["issue"]
    ), outcome
    assert stored(service, external_id) is None


def test_fhir_booked_without_a_patient_or_a_service_is_422_naming_both(
    service: Service, api: tuple[TestClient, dict[str, str]]
) -> None:
    """A booking needs someone to remind and something to remind of: the French SAS booking
    names only a Practitioner and no serviceType."""
    client, auth = api
    answer = client.post("/fhir", json=fhir(SAS_BOOKING), headers=auth)
    assert answer.status_code == 422
    issues = answer.json()["issue"]
    assert {issue["severity"] for issue in issues} == {"error"}
    assert sorted(issue["expression"][0] for issue in issues) == [
        "Bundle.entry[0].resource.participant",
        "Bundle.entry[0].resource.serviceType",
    ]
    assert stored(service, "12348") is None


def test_fhir_cancel_without_a_patient_cancels_the_booked_appointment(
    service: Service, api: tuple[TestClient, dict[str, str]]
) -> None:
    client, auth = api
    booking = {
        "appointment_id": "12348", "patient_id": "SAS1", "first_name": "Test",
        "last_name": "Patient", "mobile": "07700 900123", "email": "sas.patient@example.org",
        "procedure": "BMBX", "start": "2026-12-10T09:30", "duration_minutes": 20,
        "location": "Day Unit", "sedation": "no", "anticoagulant": "no",
    }  # fmt: skip
    assert client.post("/appointments", json=booking, headers=auth).status_code == 200
    answer = client.post("/fhir", json=fhir(SAS_CANCEL), headers=auth)
    assert answer.status_code == 200, answer.text
    assert import_summary(answer)["cancelled"] == 1
    found = stored(service, "12348")
    assert found is not None and found.status == "cancelled"
    assert (found.mobile, found.email) == ("+447700900123", "sas.patient@example.org")


def test_fhir_cancel_without_a_patient_for_an_unknown_id_is_200_not_found(
    service: Service, api: tuple[TestClient, dict[str, str]]
) -> None:
    client, auth = api
    answer = client.post("/fhir", json=fhir(SAS_CANCEL), headers=auth)
    assert answer.status_code == 200, answer.text
    assert_reported_not_found(service, import_summary(answer))
    found = stored(service, "12348")
    assert found is None or found.status != "booked"


MSFC_S17_BUNDLE = "msfc-siu-s17-01-bundle-entered-in-error-trimmed.json"


def test_fhir_entered_in_error_cancels_the_appointment_booked_by_hl7(service: Service) -> None:
    """One appointment whatever the source: FHIR's FILL identifier is HL7's SCH-2."""
    result, _ = apply_sample(service, "msfc-siu-s12-checkup-three-rgs.hl7", US)
    assert result.ack == "AA", result.text
    applied = apply_fhir(service.importer, fhir(MSFC_S17_BUNDLE), US)
    assert not [i for i in applied.issues if i.severity == "error"], applied.issues
    assert applied.summary is not None and applied.summary.cancelled == 1
    found = stored(service, "36996")
    assert found is not None and (found.status, found.clinic) == ("cancelled", "lakeside")


def test_fhir_cancellation_keeps_the_patient_the_hl7_booking_named(service: Service) -> None:
    """The FHIR Patient's MR identifier (1234567, PID-2 in the HL7 message) is not HL7's PID-3.1
    (PATID1234): the cancellation must not move the appointment to that other patient record,
    or a calendar cancellation goes to a patient with no address."""
    apply_sample(service, "msfc-siu-s12-checkup-three-rgs.hl7", US)
    apply_fhir(service.importer, fhir(MSFC_S17_BUNDLE), US)
    found = stored(service, "36996")
    assert found is not None and found.email == "adam@example.org"


def test_fhir_entered_in_error_for_an_unknown_id_is_reported_not_found(service: Service) -> None:
    applied = apply_fhir(service.importer, fhir(MSFC_S17_BUNDLE), US)
    assert applied.summary is not None
    assert_reported_not_found(service, applied.summary.counts())


# --- MLLP: every public HL7 sample over one real connection ------------------------------------

# One feed of many senders, mapped as a site would in its SIU mapping file: each message's
# sending facility (MSH-4.1) says which clinic it is for, so its numbers are read in that
# clinic's country.
FACILITIES_YAML = """\
facilities:
  sender: riverside            # Patients Know Best's example sender
  Ntierprise Clinic: lakeside
  APPT_NEW: lakeside
  proxy00-prodaz: riverside
  PHCC_EDW: riverside
  GHHSFacility: lakeside
  RADIOLOGY: lakeside
"""


# Sample -> the ACK the rules call for, with the default mapping, in this order on one
# connection (so the S13/S15/S26 of a sender follow its S12).
ROUND_TRIP = {
    "pkb-siu-s12-pid-first-sch1-reason-text-only.hl7": "AE",  # no procedure code
    "pkb-siu-s13-update-new-location.hl7": "AE",
    "pkb-siu-s13-email-in-xtn1.hl7": "AE",
    "pkb-siu-s15-cancel-sch1-only.hl7": "AA",
    "pkb-siu-s26-dna-sch1-only.hl7": "AA",
    "rethinkhealth-siu-s12-v23-ntierprise.hl7": "AA",
    "rethinkhealth-siu-s12-custom-delimiters.hl7": "AA",
    "rethinkhealth-siu-s12-cadence-z-segments-cr.hl7": "AA",
    "clicrdv-siu-s12-email-in-xtn4-only.hl7": "AE",  # no procedure code
    "clicrdv-siu-s17-delete.hl7": "AA",
    "clicrdv-siu-s26-noshow.hl7": "AA",
    "msfc-siu-s14-phcc-no-start-no-procedure.hl7": "AE",
    "msfc-siu-s15-v28-three-rgs-sch25-cancelled.hl7": "AA",
    "pacsbridge-siu-s12-no-contact-fields-shifted.hl7": "AE",
    "pacsbridge-siu-s26-no-start.hl7": "AA",
}


def msh_fields(message: bytes) -> list[str]:
    line = message.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r", 1)[0]
    text = line.decode("utf-8")
    return text.split(text[3])


def read_acks(sock: socket.socket, count: int) -> list[tuple[str, str]]:
    """`count` framed ACKs as (MSA-1, MSA-2), each read with the separators it declares."""
    data, found = b"", list[tuple[str, str]]()
    sock.settimeout(30)
    while len(found) < count:
        chunk = sock.recv(65536)
        assert chunk, "the listener closed the connection"
        data += chunk
        while b"\x1c\r" in data:
            frame, data = data.split(b"\x1c\r", 1)
            segments = frame.lstrip(b"\x0b").decode("utf-8").split("\r")
            separator = segments[0][3]
            msa = next(s for s in segments if s.startswith("MSA")).split(separator)
            found.append((msa[1], msa[2]))
    return found


def round_trip(service: Service, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Every sample in ROUND_TRIP over one connection; sample -> (ACK code, control id)."""
    mapping_file = tmp_path / "facilities.yaml"
    mapping_file.write_text(FACILITIES_YAML, encoding="utf-8")
    mapping = load_siu_mapping(mapping_file)
    clinics = service.clinic_defaults()

    def handle(frame: bytes) -> tuple[str, str]:
        results, _ = apply_siu(
            service.importer, frame, None, mapping=mapping, clinics=clinics, label="mllp"
        )
        return results[0].ack, results[0].text

    names = list(ROUND_TRIP)
    frames = b"".join(b"\x0b" + sample_bytes(name) + b"\x1c\r" for name in names)
    with (
        listening_on_a_thread(MllpServer(handle, "127.0.0.1", 0)) as port,
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        sock.sendall(frames)
        answers = read_acks(sock, len(names))
    return dict(zip(names, answers, strict=True))


def test_every_public_sample_over_one_mllp_connection_gets_its_ack(
    service: Service, tmp_path: Path
) -> None:
    answers = round_trip(service, tmp_path)
    assert {name: code for name, (code, _) in answers.items()} == ROUND_TRIP
    for name, (_, control_id) in answers.items():
        assert control_id == msh_fields(sample_bytes(name))[9], name
    # Each sender's messages went to its own clinic, and its numbers were read in its country.
    cadence = stored(service, "120152985")
    assert cadence is not None and (cadence.clinic, cadence.mobile) == ("lakeside", "+15155555552")
    ntierprise = stored(service, "13030")
    assert ntierprise is not None and (ntierprise.clinic, ntierprise.mobile) == ("lakeside", None)
    cancelled = stored(service, "36996")  # the S15 for an appointment never booked here
    assert cancelled is None or cancelled.status == "cancelled"


# --- every sample file has its expected outcome somewhere ---------------------------------------


def test_every_conformance_sample_has_its_case() -> None:
    from tests.unit.test_fhir_appointments import SAMPLE_NAMES  # noqa: PLC0415
    from tests.unit.test_hl7v2_siu import CASES  # noqa: PLC0415

    assert {p.name for p in HL7.glob("*.hl7")} == set(CASES) | set(ROUND_TRIP)
    public_fhir = {
        "isik-terminplanung-appointment-proposed.json",
        SAS_BOOKING,
        SAS_CANCEL,
        MSFC_S17_BUNDLE,
    }
    assert {p.name for p in FHIR.glob("*.json")} == set(SAMPLE_NAMES) | public_fhir
