"""A real uvicorn server keeps answering /healthz while a request does slow database or import
work: that work runs in worker threads, never on the event loop, so a 20 MB CSV upload does not
stall health checks or Twilio's webhooks.

Each test parks the slow request half-way (its service call waits for the test's signal; an
import waits inside its transaction, holding the database's write lock as a long import does),
so the probe is known to happen while that request is in progress, on any machine. The one timing
bound in the suite is here because the issue states it: /healthz answers within a second."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from reminder_service import bootstrap
from reminder_service.entrypoints.api.appointments import MAX_CSV_BYTES
from reminder_service.entrypoints.http_server import HttpServer
from reminder_service.importers.csv_mapping import LAYOUT_FIELDS
from reminder_service.services.api_keys import ApiKeys
from reminder_service.settings import Settings, TwilioSettings
from tests.fakes import FakeClock

TOKEN = "test-auth-token"
PUBLIC = "https://reminders.example.org"
FHIR = Path(__file__).parents[1] / "conformance" / "fhir"
HEALTHY_WITHIN = 1.0  # seconds: the bound
GIVE_UP_AFTER = 10.0  # a probe that stalls (the loop is blocked) fails instead of hanging


class Parked:
    """Wraps a service: its `method`, once called, waits until `release` is set. `apply` waits at
    its first appointment, inside its transaction."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner = inner
        self._method = method
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name != self._method:
            return found
        if name == "apply":
            return lambda items, **kwargs: found(self._gated(items), **kwargs)

        def parked(*args: Any, **kwargs: Any) -> Any:
            self._wait()
            return found(*args, **kwargs)

        return parked

    def _gated(self, items: Iterable[Any]) -> Iterator[Any]:
        for index, item in enumerate(items):
            if index == 0:
                self._wait()
            yield item

    def _wait(self) -> None:
        self.entered.set()
        self.release.wait(timeout=120)


def synthetic_csv(target_bytes: int) -> tuple[bytes, int]:
    """A CSV export of about `target_bytes` and its number of rows: every row valid (synthetic
    patients, the UK's example mobile range), with long fields free of delimiters."""
    location = "Haematology Day Unit Level 2 " + "East Wing " * 25
    lines = [",".join(LAYOUT_FIELDS)]
    size, count = len(lines[0]) + 1, 0
    while size < target_bytes:
        count += 1
        values = {
            "appointment_id": f"BIG{count:07d}", "patient_id": f"MRN{count:07d}",
            "first_name": "Test", "last_name": f"Patient{count}" + "x" * 60,
            "mobile": f"07400 {100000 + count % 99999}", "email": f"p{count}@example.org",
            "language": "en-GB", "timezone": "Europe/London", "procedure": "BMBX",
            "start": f"2026-12-{10 + count % 15:02d} {9 + count % 7:02d}:30",
            "duration_minutes": "60", "location": location[:250], "sedation": "yes",
            "anticoagulant": "no", "status": "booked",
        }  # fmt: skip
        line = ",".join(values.get(name, "") for name in LAYOUT_FIELDS)
        lines.append(line)
        size += len(line) + 1
    return ("\n".join(lines) + "\n").encode(), count


@pytest.fixture
def twilio_settings(settings: Settings) -> Settings:
    twilio = TwilioSettings(
        account_sid="AC" + "0" * 32, auth_token=TOKEN, from_number="+15005550006"
    )
    return replace(settings, twilio=twilio, public_url=PUBLIC)


def _signed(path: str, params: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
    }
    return urlencode(params).encode(), headers


def _fhir_bundle() -> bytes:
    patient = json.loads((FHIR / "r4-patient-example.json").read_text())
    appointment = json.loads((FHIR / "r4-appointment-example.json").read_text())
    appointment["start"], appointment["end"] = "2026-12-10T09:00:00Z", "2026-12-10T10:00:00Z"
    appointment["serviceType"][0]["coding"][0]["code"] = "BMBX"
    return json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "http://example.org/fhir/Patient/example", "resource": patient,
         "request": {"method": "PUT", "url": "Patient/example"}},
        {"resource": appointment, "request": {"method": "PUT", "url": "Appointment/example"}},
    ]}).encode()  # fmt: skip


def _multipart(csv: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "synthetic-upload-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="upload.csv"\r\nContent-Type: text/csv\r\n\r\n'
    )
    body = head.encode() + csv + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


ONE = {
    "appointment_id": "API1", "patient_id": "AP1", "first_name": "Test", "last_name": "Patient",
    "mobile": "07700 900123", "email": "api.patient@example.org", "procedure": "BMBX",
    "start": "2026-12-10T09:30", "duration_minutes": 60,
}  # fmt: skip
STATUS = {
    "MessageSid": "SM" + "a" * 32,
    "MessageStatus": "delivered",
    "AccountSid": "AC" + "0" * 32,
}
INBOUND = {"MessageSid": "SM" + "b" * 32, "From": "+447700900123", "To": "+15005550006",
           "Body": "1", "AccountSid": "AC" + "0" * 32}  # fmt: skip

# (service attribute, its slow method, path, body and headers); the API key is added for /api.
Request = tuple[str, str, str, Callable[[], tuple[bytes, dict[str, str]]]]
REQUESTS: dict[str, Request] = {
    "csv upload": ("importer", "apply", "/imports/csv", lambda: (b"", {})),  # body: see test
    "csv multipart": ("importer", "apply", "/imports/csv",
                      lambda: _multipart(synthetic_csv(4096)[0])),
    "json appointments": ("importer", "apply", "/appointments",
                          lambda: (json.dumps([ONE]).encode(),
                                   {"Content-Type": "application/json"})),
    "fhir bundle": ("importer", "apply", "/fhir",
                    lambda: (_fhir_bundle(), {"Content-Type": "application/fhir+json"})),
    "twilio status": ("delivery_status", "record", "/webhooks/twilio/status?reminder=1",
                      lambda: _signed("/webhooks/twilio/status?reminder=1", STATUS)),
    "twilio inbound": ("replies", "handle", "/webhooks/twilio/inbound",
                       lambda: _signed("/webhooks/twilio/inbound", INBOUND)),
}  # fmt: skip


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _probe_health(port: int) -> tuple[int | None, float]:
    """(status or None if no answer in GIVE_UP_AFTER, seconds it took)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=GIVE_UP_AFTER)
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        answer.read()
        status: int | None = answer.status
    except TimeoutError:
        status = None
    finally:
        conn.close()
    return status, time.monotonic() - started


@pytest.mark.parametrize("case", list(REQUESTS))
def test_health_answers_within_a_second_while_a_slow_request_is_in_progress(
    twilio_settings: Settings, clock: FakeClock, case: str
) -> None:
    attribute, method, path, make_body = REQUESTS[case]
    service = bootstrap.build(twilio_settings, clock)
    parked = Parked(getattr(service, attribute), method)
    body, headers = make_body()
    rows = 0
    if case == "csv upload":
        body, rows = synthetic_csv(MAX_CSV_BYTES - 512 * 1024)  # ~20 MB, just under the limit
        headers = {"Content-Type": "text/csv"}
    if not path.startswith("/webhooks"):
        headers["X-API-Key"] = ApiKeys(service.engine, service.clock).create("loop")
    server = HttpServer(
        replace(service, **{attribute: parked}).http_app(), "127.0.0.1", 0
    )  # port 0: the system picks a free one
    server.start()
    pool = ThreadPoolExecutor(max_workers=1)
    upload: Future[tuple[int, bytes]] = pool.submit(_post, server.port, path, body, headers)
    try:
        assert parked.entered.wait(timeout=120), "the request never reached its slow call"
        status, took = _probe_health(server.port)
        still_in_progress = not upload.done()
    finally:
        parked.release.set()
        answer_status, answer = upload.result(timeout=300)
        pool.shutdown()
        server.stop()
        service.close()
    assert still_in_progress  # the probe ran while the request was parked half-way
    assert status == 200, f"/healthz gave no answer within {GIVE_UP_AFTER} s"
    assert took < HEALTHY_WITHIN, f"/healthz took {took:.2f} s"
    assert answer_status == 200, answer[:500]
    if case == "csv upload":
        assert json.loads(answer)["summary"]["imported"] == rows
