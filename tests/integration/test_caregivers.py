"""A caregiver gets copies of the patient's texts when the patient chose so and the caregiver
consented: planned as rows of their own, sent through the same claim and outbox as the patient's,
opted out by their own number only; an import that says nothing about a caregiver keeps it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import CAREGIVER_UNSAID, Appointment, Caregiver
from reminder_service.importers.csv_rows import ImportDefaults
from reminder_service.importers.hl7v2_siu import SiuMapping
from reminder_service.services.api_keys import ApiKeys
from reminder_service.services.csv_import import import_csv_file
from reminder_service.services.hl7_import import apply_siu
from reminder_service.store.tables import patients, reminders, sms_opt_outs
from tests.factories import appointment, local, patient

PATIENT = "+447700900123"
CARER = "+447700900456"


def carer(**changes: Any) -> Caregiver:
    base = Caregiver("Ann Carer", CARER, "mother", sms_consent=True, copies=True)
    return replace(base, **changes)


def with_carer(caregiver: Any = None, **changes: Any) -> Appointment:
    chosen = carer() if caregiver is None else caregiver
    return appointment(patient=patient(caregiver=chosen), **changes)


def rows(service: Service, **where: str) -> list[Any]:
    query = select(reminders).order_by(reminders.c.id)
    for column, value in where.items():
        query = query.where(reminders.c[column] == value)
    with service.engine.connect() as conn:
        return list(conn.execute(query).mappings())


def stored_patient(service: Service) -> Any:
    with service.engine.connect() as conn:
        return conn.execute(select(patients)).mappings().one()


def outbox_texts(settings: Any) -> list[dict[str, Any]]:
    folder = settings.outbox_dir / "sms"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_both_numbers_get_the_booked_text_through_the_outbox(service: Service, settings) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, with_carer())], source="test", label="t")
    report = service.dispatcher.dispatch_due()
    assert report.by_status == {"sent": 3}  # the patient's SMS and email, the caregiver's SMS
    texts = {t["to"]: t for t in outbox_texts(settings)}
    assert set(texts) == {PATIENT, CARER}
    patient_body = texts[PATIENT]["body"]
    assert texts[CARER]["body"] == f"For Test: {patient_body}"
    assert texts[CARER]["step"] == texts[PATIENT]["step"] == "booked"
    copy = rows(service, recipient="caregiver")
    assert [(r["step_id"], r["status"]) for r in copy] == [("booked", "sent")]
    assert copy[0]["provider_id"] == f"outbox:sms/{copy[0]['id']}.json"
    assert service.dispatcher.dispatch_due().claimed == 0  # nothing twice
    # Emails stay the patient's: the caregiver has rows for texts only.
    assert {r["channel"] for r in rows(service, recipient="caregiver")} == {"sms"}


@pytest.mark.parametrize(
    ("copies", "consent", "expected"),
    [
        (True, True, "pending"),
        (True, False, "skipped"),
        (False, True, None),
        (False, False, None),
    ],
)
def test_consent_matrix(
    service: Service, copies: bool, consent: bool, expected: str | None
) -> None:  # type: ignore[no-untyped-def]
    """Copies only when the patient chose them AND the caregiver consented; without the
    patient's choice there is no copy at all."""
    caregiver = carer(copies=copies, sms_consent=consent)
    service.importer.apply([(2, with_carer(caregiver))], source="test", label="t")
    copy = rows(service, recipient="caregiver", step_id="booked")
    if expected is None:
        assert copy == []
    else:
        assert [r["status"] for r in copy] == [expected]
        if expected == "skipped":
            assert copy[0]["reason"] == "caregiver copy: the caregiver has not consented to texts"
    report = service.dispatcher.dispatch_due()
    assert report.by_status.get("sent") == (3 if expected == "pending" else 2)


def test_same_number_is_texted_once(service: Service, settings) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, with_carer(carer(mobile=PATIENT)))], source="test", label="t")
    service.dispatcher.dispatch_due()
    assert [t["to"] for t in outbox_texts(settings)] == [PATIENT]
    [copy] = rows(service, recipient="caregiver", step_id="booked")
    assert copy["status"] == "skipped"
    assert "the caregiver's mobile is the patient's" in copy["reason"]


def test_caregiver_stop_silences_only_the_caregiver(service: Service, settings, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, with_carer())], source="test", label="t")
    service.replies.handle("SM" + "1" * 32, CARER, "STOP")
    service.dispatcher.dispatch_due()
    assert [t["to"] for t in outbox_texts(settings)] == [PATIENT]
    [copy] = rows(service, recipient="caregiver", step_id="booked")
    assert (copy["status"], copy["reason"]) == ("skipped", "the number has opted out of SMS")
    # No fallback email and no staff alert for a caregiver's copy: the patient was reached.
    assert rows(service, channel="staff") == []
    assert len(rows(service, step_id="booked", channel="email")) == 1


def test_patient_stop_does_not_silence_the_caregiver(service: Service, settings) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, with_carer())], source="test", label="t")
    service.replies.handle("SM" + "2" * 32, PATIENT, "STOP")
    service.dispatcher.dispatch_due()
    assert [t["to"] for t in outbox_texts(settings)] == [CARER]


def test_patient_without_sms_consent_still_has_copies_sent(service: Service, settings) -> None:  # type: ignore[no-untyped-def]
    """The caregiver's copy rests on the patient's choice and the caregiver's consent, not on
    whether the patient takes texts themselves."""
    chosen = patient(caregiver=carer(), sms_consent="")
    service.importer.apply([(2, appointment(patient=chosen))], source="test", label="t")
    service.dispatcher.dispatch_due()
    assert [t["to"] for t in outbox_texts(settings)] == [CARER]


def test_suppressed_patient_silences_the_caregiver_too(service: Service, settings) -> None:  # type: ignore[no-untyped-def]
    chosen = patient(caregiver=carer(), do_not_contact=True)
    service.importer.apply([(2, appointment(patient=chosen))], source="test", label="t")
    service.dispatcher.dispatch_due()
    assert outbox_texts(settings) == []


def test_consent_withdrawn_after_planning_is_honoured_at_send_time(
    service: Service, settings
) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, with_carer())], source="test", label="t")
    with service.engine.begin() as conn:  # as an import of another appointment would leave it
        conn.execute(patients.update().values(caregiver_sms_consent=False))
    service.dispatcher.dispatch_due()
    assert [t["to"] for t in outbox_texts(settings)] == [PATIENT]
    [copy] = rows(service, recipient="caregiver", step_id="booked")
    assert copy["reason"] == "caregiver copy: the caregiver has not consented to texts"


def test_reimport_updates_removes_and_unsaid_keeps(service: Service) -> None:
    service.importer.apply([(2, with_carer())], source="test", label="t")
    assert stored_patient(service)["caregiver_mobile"] == CARER

    # Unsaid: the stored caregiver stays, and nothing changes.
    unsaid = appointment(patient=patient(caregiver=CAREGIVER_UNSAID))
    summary = service.importer.apply([(2, unsaid)], source="test", label="t")
    assert summary.unchanged == 1
    assert stored_patient(service)["caregiver_name"] == "Ann Carer"
    assert len(rows(service, recipient="caregiver", status="pending")) == 1

    # Updated: a new number; the pending copy is re-planned, nothing twice.
    moved = with_carer(carer(mobile="+447700900789", relationship="partner"))
    summary = service.importer.apply([(2, moved)], source="test", label="t")
    assert summary.updated == 1
    stored = stored_patient(service)
    assert (stored["caregiver_mobile"], stored["caregiver_relationship"]) == (
        "+447700900789",
        "partner",
    )

    # Removed: an explicit "no caregiver" cancels the pending copies.
    summary = service.importer.apply([(2, appointment(patient=patient(caregiver=None)))],
                                     source="test", label="t")  # fmt: skip
    assert summary.updated == 1
    assert stored_patient(service)["caregiver_name"] is None
    assert rows(service, recipient="caregiver", status="pending") == []


def test_a_new_appointment_unsaid_gets_the_stored_caregiver(service: Service) -> None:
    service.importer.apply([(2, with_carer())], source="test", label="t")
    second = appointment(external_id="A2", patient=patient(caregiver=CAREGIVER_UNSAID))
    service.importer.apply([(3, second)], source="test", label="t")
    with service.engine.connect() as conn:
        copies = conn.execute(
            select(reminders.c.appointment_id).where(reminders.c.recipient == "caregiver")
        ).all()
    assert len({c[0] for c in copies}) == 2  # both appointments plan the caregiver's copies


def test_preview_shows_the_copy_with_its_prefix(service: Service) -> None:
    service.importer.apply([(2, with_carer())], source="test", label="t")
    preview = service.previewer().preview("A1")
    booked = [line for line in preview.lines if line.step == "booked" and line.channel == "sms"]
    by_recipient = {line.recipient: line for line in booked}
    assert set(by_recipient) == {"patient", "caregiver"}
    assert by_recipient["caregiver"].body == f"For Test: {by_recipient['patient'].body}"
    assert by_recipient["caregiver"].as_json()["recipient"] == "caregiver"


def test_caregiver_reply_code_confirms_the_patients_appointment(service: Service) -> None:
    service.importer.apply([(2, with_carer())], source="test", label="t")
    outcome = service.replies.handle("SM" + "3" * 32, CARER, "1")
    assert outcome.kind.value == "confirm"
    preview = service.previewer().preview("A1")
    assert preview.confirmed_at is not None


CSV_HEADER = (
    "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,procedure,"
    "start,duration_minutes,location,sedation,anticoagulant,status"
)
CSV_ROW = "A1,P1,Test,Patient,07700 900123,,,,BMBX,2026-12-10 09:30,60,,yes,no,booked"
CARE_COLUMNS = ",caregiver_name,caregiver_mobile,caregiver_relationship,caregiver_consent,"
CARE_COLUMNS += "caregiver_copies"


def import_csv(service: Service, tmp_path, text: str, workers: int = 0):  # type: ignore[no-untyped-def]
    path = tmp_path / "export.csv"
    path.write_text(text)
    defaults = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
    return import_csv_file(path, service.importer, defaults, workers=workers)


@pytest.mark.parametrize("workers", [0, 1])
def test_csv_caregiver_columns_plan_copies_and_warn_about_a_bad_number(
    service: Service, tmp_path, workers: int
) -> None:  # type: ignore[no-untyped-def]
    good = f"{CSV_ROW},Ann Carer,07700 900456,mother,yes,yes"
    bad = CSV_ROW.replace("A1,P1", "A2,P2") + ",Bob Carer,07700 9004,father,yes,yes"
    summary = import_csv(service, tmp_path, f"{CSV_HEADER}{CARE_COLUMNS}\n{good}\n{bad}\n", workers)
    assert (summary.imported, summary.rejected) == (2, 0)
    assert [(w.line, w.column) for w in summary.warnings] == [(3, "caregiver_mobile")]
    copies = rows(service, recipient="caregiver", step_id="booked")
    assert [(r["status"], r["reason"]) for r in copies] == [
        ("pending", "planned: at booking"),
        ("skipped", "caregiver copy: no mobile number for the caregiver"),
    ]


def test_a_csv_without_caregiver_columns_keeps_the_caregiver_set_by_another_feed(
    service: Service, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, with_carer())], source="hl7", label="t")
    summary = import_csv(service, tmp_path, f"{CSV_HEADER}\n{CSV_ROW}\n")
    assert summary.updated == 1  # the CSV describes the appointment differently
    assert stored_patient(service)["caregiver_mobile"] == CARER
    # Re-planned with the caregiver it keeps: the copy is still to go.
    assert len(rows(service, recipient="caregiver", step_id="booked", status="pending")) == 1
    # With the columns, blank cells say there is no caregiver any more.
    summary = import_csv(service, tmp_path, f"{CSV_HEADER}{CARE_COLUMNS}\n{CSV_ROW},,,,,\n")
    assert summary.updated == 1
    assert stored_patient(service)["caregiver_name"] is None


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("test")
    yield TestClient(service.http_app()), {"Authorization": f"Bearer {key}"}


ONE = {
    "appointment_id": "API1", "patient_id": "AP1", "first_name": "Test", "last_name": "Patient",
    "mobile": "07700 900123", "procedure": "BMBX", "start": "2026-12-10T09:30",
    "sedation": "yes", "anticoagulant": "no",
}  # fmt: skip


def test_json_caregiver_object(service: Service, api, settings) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    caregiver = {"name": "Ann Carer", "mobile": "07700 900456", "relationship": "mother",
                 "sms_consent": True, "copies": True}  # fmt: skip
    answer = client.post("/appointments", json={**ONE, "caregiver": caregiver}, headers=auth)
    assert answer.status_code == 200 and answer.json()["warnings"] == []
    assert stored_patient(service)["caregiver_mobile"] == CARER
    service.dispatcher.dispatch_due()
    assert {t["to"] for t in outbox_texts(settings)} == {PATIENT, CARER}

    # No `caregiver` key: nothing said, the caregiver stays.
    again = client.post("/appointments", json=ONE, headers=auth).json()
    assert again["summary"]["unchanged"] == 1
    # A number that cannot be read: a warning naming the item's field; the appointment imports.
    bad = {**caregiver, "mobile": "07700 9004"}
    answer = client.post("/appointments", json={**ONE, "caregiver": bad}, headers=auth).json()
    assert answer["summary"]["updated"] == 1 and answer["errors"] == []
    [warning] = answer["warnings"]
    assert (warning["index"], warning["field"]) == (0, "caregiver.mobile")
    assert "9004" not in warning["reason"]
    # `null`: the patient has no caregiver now.
    answer = client.post("/appointments", json={**ONE, "caregiver": None}, headers=auth).json()
    assert answer["summary"]["updated"] == 1
    assert stored_patient(service)["caregiver_name"] is None


def test_json_caregiver_of_the_wrong_shape_names_the_field(api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = client.post("/appointments", json={**ONE, "caregiver": {"copies": "perhaps"}},
                         headers=auth)  # fmt: skip
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["caregiver.copies"]


def siu(nk1: str, control: str = "C1", event: str = "S12") -> bytes:
    return (
        f"MSH|^~\\&|EHR|RIVERSIDE|REMIND|X|20261119100000||SIU^{event}|{control}|P|2.5\r"
        "SCH|PL1|A1|||||||||^^^20261210093000^^^^^^^^60\r"
        "PID|1||P1||Patient^Test||19700101|F|||||07700 900123^PRN^CP\r"
        f"{nk1}AIS|1||BMBX\r"
    ).encode()


NK1 = "NK1|1|Carer^Ann|MTH^Mother||07700 900456^PRN^CP||C\r"


def test_hl7_nk1_with_consent_from_the_feed_mapping_texts_both(service: Service, settings) -> None:  # type: ignore[no-untyped-def]
    defaults = service.import_defaults(None)
    results, _ = apply_siu(
        service.importer, siu(NK1), defaults, mapping=SiuMapping(caregiver_copies=True)
    )
    assert [r.ack for r in results] == ["AA"]
    service.dispatcher.dispatch_due()
    assert {t["to"] for t in outbox_texts(settings)} == {PATIENT, CARER}


def test_hl7_without_consent_keeps_what_was_recorded_for_the_same_number(
    service: Service, settings, clock
) -> None:  # type: ignore[no-untyped-def]
    defaults = service.import_defaults(None)
    apply_siu(service.importer, siu(NK1), defaults)  # no consent in HL7: no copies
    assert rows(service, recipient="caregiver") == []
    stored = stored_patient(service)
    assert (stored["caregiver_mobile"], stored["caregiver_copies"]) == (CARER, False)
    # The clinic records both consents through the API (or a CSV)...
    service.importer.apply([(2, with_carer())], source="api", label="t")
    # ...and a later S14 from HL7, which cannot say, keeps them for the same number.
    clock.advance(minutes=5)
    apply_siu(service.importer, siu(NK1, "C2", "S14"), defaults)
    assert stored_patient(service)["caregiver_copies"] is True
    # A new number from HL7 is a different person as far as texts go: no consent carried over.
    other = NK1.replace("07700 900456", "07700 900789")
    apply_siu(service.importer, siu(other, "C3", "S14"), defaults)
    stored = stored_patient(service)
    assert (stored["caregiver_mobile"], stored["caregiver_copies"]) == ("+447700900789", False)
    assert rows(service, recipient="caregiver", status="pending") == []


def test_hl7_without_nk1_keeps_the_caregiver(service: Service) -> None:
    service.importer.apply([(2, with_carer())], source="api", label="t")
    apply_siu(service.importer, siu(""), service.import_defaults(None))
    assert stored_patient(service)["caregiver_mobile"] == CARER


def fhir_bundle(related_in_bundle: bool) -> dict[str, Any]:
    person = {
        "resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/p1"},
        "relationship": [{"text": "mother"}], "name": [{"family": "Carer", "given": ["Ann"]}],
        "telecom": [{"system": "phone", "use": "mobile", "value": "07700 900456"}],
    }  # fmt: skip
    appointment_resource: dict[str, Any] = {
        "resourceType": "Appointment", "id": "a1", "status": "booked",
        "identifier": [{"value": "A1"}], "start": "2026-12-10T09:30:00Z",
        "serviceType": [{"coding": [{"code": "BMBX"}]}],
        "participant": [
            {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
            {"actor": {"reference": "RelatedPerson/rp1" if related_in_bundle else "#rp1"},
             "status": "accepted"},
        ],
    }  # fmt: skip
    patient_resource = {
        "resourceType": "Patient", "id": "p1", "identifier": [{"value": "P1"}],
        "name": [{"family": "Patient", "given": ["Test"]}],
        "telecom": [{"system": "phone", "use": "mobile", "value": "07700 900123"}],
    }  # fmt: skip
    resources = [appointment_resource, patient_resource]
    if related_in_bundle:
        resources.append(person)
    else:
        appointment_resource["contained"] = [person]
    return {"resourceType": "Bundle", "type": "batch",
            "entry": [{"resource": r} for r in resources]}  # fmt: skip


@pytest.mark.parametrize("related_in_bundle", [True, False])
def test_fhir_related_person_with_clinic_collected_consent_texts_both(
    settings, clock, related_in_bundle: bool
) -> None:  # type: ignore[no-untyped-def]
    built = bootstrap.build(replace(settings, fhir_caregiver_copies=True), clock)
    try:
        key = ApiKeys(built.engine, built.clock).create("test")
        client = TestClient(built.http_app())
        answer = client.post("/fhir", json=fhir_bundle(related_in_bundle),
                             headers={"X-API-Key": key})  # fmt: skip
        assert answer.status_code == 200, answer.json()
        built.dispatcher.dispatch_due()
        texts = {t["to"]: t["body"] for t in outbox_texts(settings)}
        assert set(texts) == {PATIENT, CARER}
        assert texts[CARER] == f"For Test: {texts[PATIENT]}"
    finally:
        built.close()


def test_fhir_related_person_without_consent_sends_no_copy(service: Service, api, settings) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    assert client.post("/fhir", json=fhir_bundle(True), headers=auth).status_code == 200
    assert stored_patient(service)["caregiver_mobile"] == CARER
    service.dispatcher.dispatch_due()
    assert [t["to"] for t in outbox_texts(settings)] == [PATIENT]


def test_undelivered_copy_with_an_unsubscribed_code_opts_out_the_caregiver_only(
    service: Service,
) -> None:
    """Twilio reports the caregiver's copy undelivered, error 21610 (the recipient replied STOP
    to the sender): the caregiver's number is opted out, never the patient's; and no fallback
    email or staff alert follows, as the patient's own text went."""
    service.importer.apply([(2, with_carer())], source="test", label="t")
    service.dispatcher.dispatch_due()
    [copy] = rows(service, recipient="caregiver", step_id="booked")
    result = service.delivery_status.record(copy["id"], copy["provider_id"], "undelivered", "21610")
    assert result == "recorded"
    with service.engine.connect() as conn:
        opted_out = list(conn.execute(select(sms_opt_outs.c.phone)).scalars())
    assert opted_out == [CARER]
    assert rows(service, channel="staff") == []
    assert len(rows(service, step_id="booked", channel="email")) == 1


def test_later_copies_come_as_the_planning_horizon_reaches_them(service: Service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, with_carer())], source="test", label="t")
    assert {r["step_id"] for r in rows(service, recipient="caregiver")} == {"booked"}
    clock.now = local("Europe/London", 2026, 12, 2, 11, 0)
    service.materializer.materialize()
    copies = {r["step_id"] for r in rows(service, recipient="caregiver")}
    patients_texts = {r["step_id"] for r in rows(service, recipient="patient", channel="sms")}
    assert "medicines" in copies and copies == patients_texts


def test_a_batch_mixing_items_with_and_without_a_caregiver_updates_each(service, api) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    second = {**ONE, "appointment_id": "API2", "patient_id": "AP2", "mobile": "07700 900124"}
    assert client.post("/appointments", json=[ONE, second], headers=auth).status_code == 200
    caregiver = {"name": "Ann Carer", "mobile": "07700 900456", "sms_consent": True,
                 "copies": True}  # fmt: skip
    batch = [{**ONE, "first_name": "Renamed"}, {**second, "caregiver": caregiver}]
    answer = client.post("/appointments", json=batch, headers=auth).json()
    assert answer["summary"]["updated"] == 2
    with service.engine.connect() as conn:
        stored = {r["external_id"]: r for r in conn.execute(select(patients)).mappings()}
    assert stored["AP1"]["first_name"] == "Renamed" and stored["AP1"]["caregiver_name"] is None
    assert stored["AP2"]["caregiver_mobile"] == CARER
