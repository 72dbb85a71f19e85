"""The replies API through the real app: staff list what patients texted (number and text, to call
back), filter the ones waiting for a person or one clinic's, mark one handled by the key's name,
and confirm an appointment for a patient; bad input is a JSON 404 or 422, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import pytest
from fastapi.testclient import TestClient

from reminder_service.bootstrap import Service
from reminder_service.services.api_keys import ApiKeys
from reminder_service.services.auditing import audit_trail
from tests.factories import appointment, local, patient

SIDS = count(1)
RIVERSIDE_PHONE = "+447700900123"
LAKESIDE_PHONE = "+447700900150"
UNKNOWN_PHONE = "+447700900999"


@pytest.fixture
def api(service: Service) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(service.engine, service.clock).create("front.desk")
    yield TestClient(service.http_app()), {"Authorization": f"Bearer {key}"}


def texted(service: Service, phone: str, body: str) -> None:
    service.replies.handle(f"SM{next(SIDS):032d}", phone, body)


@pytest.fixture
def inbox(service: Service, clock) -> Service:  # type: ignore[no-untyped-def]
    lake = patient(external_id="PL", first_name="Lake", last_name="Side", mobile=LAKESIDE_PHONE,
                   timezone="America/Chicago")  # fmt: skip
    service.importer.apply(
        [(2, appointment()),
         (3, appointment(external_id="L1", clinic_id="lakeside", patient=lake,
                         start=local("America/Chicago", 2026, 12, 10, 9, 0)))],
        source="t", label="t",
    )  # fmt: skip
    texted(service, RIVERSIDE_PHONE, "Can I bring my daughter?")
    clock.advance(minutes=1)
    texted(service, RIVERSIDE_PHONE, "STOP")
    clock.advance(minutes=1)
    texted(service, LAKESIDE_PHONE, "2")
    clock.advance(minutes=1)
    texted(service, UNKNOWN_PHONE, "wrong number?")
    return service


def test_the_replies_endpoints_need_a_key(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    for method, path in [("get", "/replies"), ("post", "/replies/1/handled"),
                         ("post", "/appointments/A1/confirm")]:  # fmt: skip
        assert getattr(client, method)(path).status_code == 401, path


def test_replies_are_listed_newest_first_with_their_number_text_and_appointment(
    api, inbox, clock
) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    replies = client.get("/replies", headers=auth).json()["replies"]
    assert [(r["phone"], r["body"], r["kind"]) for r in replies] == [
        (UNKNOWN_PHONE, "wrong number?", "other"),
        (LAKESIDE_PHONE, "2", "new_time"),
        (RIVERSIDE_PHONE, "STOP", "opt_out"),
        (RIVERSIDE_PHONE, "Can I bring my daughter?", "other"),
    ]
    daughter = replies[3]
    assert daughter["appointment_id"] == "A1" and daughter["patient_id"] == "P1"
    assert daughter["patient_name"] == "Test Patient" and daughter["clinic"] == "riverside"
    assert daughter["answer"] == "acknowledged" and daughter["handled_at"] is None
    assert replies[0]["appointment_id"] is None and replies[0]["clinic"] == "riverside"
    assert replies[2]["handled_by"] == "automatic"  # STOP was dealt with by the service

    waiting = client.get("/replies?unhandled=true", headers=auth).json()["replies"]
    assert [r["body"] for r in waiting] == ["wrong number?", "2", "Can I bring my daughter?"]
    lakeside = client.get("/replies?clinic=lakeside", headers=auth).json()["replies"]
    assert [r["appointment_id"] for r in lakeside] == ["L1"]
    assert len(client.get("/replies?limit=1", headers=auth).json()["replies"]) == 1


def test_a_reply_is_marked_handled_once_by_the_keys_name(api, inbox, clock) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    [daughter] = [
        r for r in client.get("/replies", headers=auth).json()["replies"]
        if r["body"].startswith("Can I")
    ]  # fmt: skip
    clock.advance(hours=1)
    handled = client.post(f"/replies/{daughter['id']}/handled", headers=auth)
    assert handled.status_code == 200
    assert handled.json()["handled_by"] == "front.desk"
    assert handled.json()["handled_at"] == clock.now.isoformat()
    assert handled.json()["already_handled"] is False
    clock.advance(hours=1)
    again = client.post(f"/replies/{daughter['id']}/handled", headers=auth).json()
    assert again["already_handled"] is True and again["handled_at"] == handled.json()["handled_at"]
    waiting = client.get("/replies?unhandled=true", headers=auth).json()["replies"]
    assert daughter["id"] not in [r["id"] for r in waiting]
    trail = [(e.event, e.reason) for e in audit_trail(inbox.engine, "A1")]
    assert ("reply_handled", f"reply {daughter['id']} handled by front.desk") in trail


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("post", "/replies/999/handled", 404), ("post", "/replies/0/handled", 422),
     ("post", f"/replies/{2**40}/handled", 422), ("post", "/replies/abc/handled", 422),
     ("get", "/replies?unhandled=maybe", 422), ("get", "/replies?clinic=nowhere", 422),
     ("get", "/replies?limit=0", 422), ("get", "/replies?limit=5000", 422),
     ("get", "/replies?limit=x", 422), ("post", "/appointments/NOPE/confirm", 404),
     ("post", "/appointments/%00/confirm", 404)],
)  # fmt: skip
def test_bad_input_is_a_json_error(api, method, path, status) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    answer = getattr(client, method)(path, headers=auth)
    assert answer.status_code == status
    assert "detail" in answer.json()


def test_staff_confirm_an_appointment_and_its_timeline_shows_it(api, service, clock) -> None:  # type: ignore[no-untyped-def]
    client, auth = api
    gone = appointment(external_id="GONE", patient=patient(external_id="P2"))
    service.importer.apply([(2, appointment()), (3, gone)], source="t", label="t")
    before = client.get("/appointments/A1", headers=auth).json()["confirmation"]
    assert before == {
        "required_by": local("Europe/London", 2026, 12, 8, 9, 30).isoformat(),
        "confirmed_at": None, "confirmed_by": None, "staff_alerted_at": None,
    }  # fmt: skip
    confirmed = client.post("/appointments/A1/confirm", headers=auth)
    assert confirmed.status_code == 200
    assert confirmed.json()["confirmed_by"] == "front.desk"
    after = client.get("/appointments/A1", headers=auth).json()
    assert after["confirmation"]["confirmed_at"] == clock.now.isoformat()
    assert after["confirmed_at"] == clock.now.isoformat()
    service.importer.cancel("GONE", source="t")
    assert client.post("/appointments/GONE/confirm", headers=auth).status_code == 409
