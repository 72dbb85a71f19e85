"""A local stand-in for Twilio's Messages API, for tests and benchmarks.

It speaks what the official SDK sends and parses: `POST /2010-04-01/Accounts/{sid}/Messages.json`
(form-encoded, HTTP Basic auth), answering 201 with a message resource or Twilio-style JSON errors;
and `GET` of the same path, the Message list, with Twilio's filters and paging (see `_list`).
Scriptable: latency with jitter, per-number answers (a Twilio error code, a slow answer, or a
message accepted whose answer is lost), and seeded random faults: 500s and 429s (nothing created),
and messages created whose answer is then a 500 or a dropped connection (an unknown outcome for
the client). It records every request (arrival time, To, status) and every accepted message (its
form params), and counts requests in flight. A slow answer is a 201 after its delay, or at once
when the server stops. In its own process it handles about 5,500 requests per CPU-second (about
0.18 ms each, 100 ms latency and 400 in flight included).

Message times come from an injectable clock (a test's fake clock), so the list's date filters
agree with the client's idea of "now". A created message stays `queued`, with no `date_sent`,
for `queued_seconds` (0: sent at once), as on Twilio while a sender's queue drains; and is
missing from the list for `list_lag_seconds` (0: listed at once), as Twilio's list has been seen
to lag behind.

In a test, in a thread of the test process:

    with serve_in_thread(Behaviour(latency_ms=100)) as server:
        settings = TwilioSettings(..., api_base_url=server.base_url)
        ...
        server.stats()["max_in_flight"], server.messages(), server.requests()

For a benchmark, in its own process (so its CPU does not compete with the client for the GIL):

    with serve_in_process(Behaviour(latency_ms=100, fail_500=0.2)) as server:
        ...; server.stats(); server.reset()

or from a shell: `python -m tests.servers.twilio_api --port 8099 --latency-ms 100 --fail-500 0.2
--throttle-429 0.1 --seed 1 --reject +447700900666=21211 --slow +447700900777=30`; then
`GET /_stats` (JSON), `GET /_messages` (accepted messages), `POST /_reset`. `--accept-then-500`
and `--accept-then-drop` give the fractions of requests whose message is created before the answer
is a 500 or the connection is closed.

Status callbacks are not sent by the server; `status_callback_params`, `sign_callback` and
`post_status_callback` build, sign (with the SDK's own RequestValidator, as Twilio does) and POST
one, for tests of a webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

# Synthetic credentials and numbers (UK drama range), never real ones.
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f" * 32
FROM_NUMBER = "+447700900001"
MESSAGING_SERVICE_SID = "MG" + "fedcba9876543210" * 2
API_VERSION = "2010-04-01"

# Twilio's error codes the server can answer with: status and message. Some messages quote the
# number, as Twilio's do, so tests can check it never leaks into our failures or logs.
ERRORS: dict[int, tuple[int, str]] = {
    20001: (400, "Invalid value for parameter {code}"),
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient {to}"),
    21614: (400, "'To' number {to} is not a valid mobile number"),
}

ROOT = Path(__file__).resolve().parents[2]  # the project: where `-m tests.servers...` imports


@dataclass
class Behaviour:
    """What the server does. Mutable: a test may change it between sends."""

    latency_ms: float = 0.0  # before every answer
    jitter_ms: float = 0.0  # latency is uniform in latency_ms ± jitter_ms
    fail_500: float = 0.0  # fraction of requests answered 500 (code 20500)
    throttle_429: float = 0.0  # fraction answered 429 (code 20429)
    # Fractions of requests whose message is created, and then the answer is a 500 (as from a
    # gateway that lost the backend's answer) or the connection is closed with no answer at all.
    accept_then_500: float = 0.0
    accept_then_drop: float = 0.0
    list_fail_500: float = 0.0  # fraction of Message list requests answered 500
    queued_seconds: float = 0.0  # how long a new message stays queued, with no date_sent
    # How long a new message is missing from the list (Twilio's list has been seen to lag).
    list_lag_seconds: float = 0.0
    seed: int = 0  # for the jitter and the random failures
    reject: dict[str, int] = field(default_factory=dict)  # To -> Twilio error code to answer
    slow: dict[str, float] = field(default_factory=dict)  # To -> seconds before a 201
    # To numbers whose messages are accepted (recorded, with a SID) but whose answer never comes
    # before the server stops: the client's timeout fires though Twilio has the message.
    lose_answer: set[str] = field(default_factory=set)
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN

    def to_args(self) -> list[str]:
        """The command line that gives a server process this behaviour."""
        args = [
            f"--latency-ms={self.latency_ms}",
            f"--jitter-ms={self.jitter_ms}",
            f"--fail-500={self.fail_500}",
            f"--throttle-429={self.throttle_429}",
            f"--accept-then-500={self.accept_then_500}",
            f"--accept-then-drop={self.accept_then_drop}",
            f"--list-fail-500={self.list_fail_500}",
            f"--queued-seconds={self.queued_seconds}",
            f"--list-lag-seconds={self.list_lag_seconds}",
            f"--seed={self.seed}",
            f"--account-sid={self.account_sid}",
            f"--auth-token={self.auth_token}",
        ]
        args += [f"--reject={to}={code}" for to, code in self.reject.items()]
        args += [f"--slow={to}={seconds}" for to, seconds in self.slow.items()]
        args += [f"--lose-answer={to}" for to in sorted(self.lose_answer)]
        return args


@dataclass(slots=True)
class RequestRecord:
    arrival: float  # time.monotonic() (CLOCK_MONOTONIC: comparable across processes on a host)
    to: str | None = None
    status: int | None = None  # None while unanswered


Clock = Callable[[], datetime]
PAGE_SIZE = 50  # Twilio's default page size, and its largest
MAX_PAGE_SIZE = 1000


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TwilioApiServer:
    """The aiohttp application and what it saw. Safe to read from another thread."""

    def __init__(self, behaviour: Behaviour | None = None, clock: Clock = _utc_now) -> None:
        self.behaviour = behaviour or Behaviour()
        self.base_url = ""  # set once listening
        self._clock = clock
        self._lock = threading.Lock()
        self._random = random.Random(self.behaviour.seed)
        self._stopping: asyncio.Event | None = None
        self._auth_key: tuple[str, str] | None = None
        self._auth = ""
        self._in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Forget what was seen (requests still in flight stay counted as in flight)."""
        with self._lock:
            self._requests: list[RequestRecord] = []
            self._messages: list[dict[str, Any]] = []
            self._by_to: dict[str, list[dict[str, Any]]] = {}  # the list reads one number's
            self._statuses: Counter[int] = Counter()
            self._list_requests: Counter[int] = Counter()
            self._list_queries: list[dict[str, str]] = []
            self._max_in_flight = self._in_flight
            self._random.seed(self.behaviour.seed)

    # -- reading what happened ---------------------------------------------------------------

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return [RequestRecord(r.arrival, r.to, r.status) for r in self._requests]

    def messages(self) -> list[dict[str, Any]]:
        """Accepted messages: the form params as sent (To, Body, From or MessagingServiceSid,
        StatusCallback) plus `sid`, `arrival` and `created` (the server clock's POSIX time)."""
        with self._lock:
            return [dict(m) for m in self._messages]

    def list_queries(self) -> list[dict[str, str]]:
        """The query of each Message list request, as received (e.g. {"To": ..., "DateSent>":
        "2026-11-19T10:59:00Z", "PageSize": "1000"})."""
        with self._lock:
            return [dict(q) for q in self._list_queries]

    def add_message(self, to: str, body: str, created: datetime, **params: str) -> str:
        """A message as if created earlier through the API (another attempt, another reminder);
        returns its SID. `params` are more form fields, e.g. From or MessagingServiceSid."""
        fields = {"To": to, "Body": body, **params}
        if "MessagingServiceSid" not in fields:
            fields.setdefault("From", FROM_NUMBER)
        sid = _new_sid()
        with self._lock:
            self._keep(
                {**fields, "sid": sid, "arrival": time.monotonic(), "created": created.timestamp()}
            )
        return sid

    def _keep(self, message: dict[str, Any]) -> None:
        """Store an accepted message (the lock held)."""
        self._messages.append(message)
        self._by_to.setdefault(str(message.get("To")), []).append(message)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            arrivals = sorted(r.arrival for r in self._requests)
            callbacks = Counter(m.get("StatusCallback", "") for m in self._messages)
            bodies = Counter(m.get("Body", "") for m in self._messages)
            statuses = {str(s): n for s, n in sorted(self._statuses.items())}
            lists = {str(s): n for s, n in sorted(self._list_requests.items())}
            in_flight, max_in_flight = self._in_flight, self._max_in_flight
        per_second: list[int] = []
        if arrivals:
            per_second = [0] * (int(arrivals[-1] - arrivals[0]) + 1)
            for arrival in arrivals:
                per_second[int(arrival - arrivals[0])] += 1
        return {
            "requests": len(arrivals),
            "accepted": sum(callbacks.values()),
            "status_codes": statuses,
            "list_requests": lists,  # Message list reads, by answer status
            "in_flight": in_flight,
            "max_in_flight": max_in_flight,
            "accepted_per_callback": dict(callbacks),
            "duplicate_callbacks": sum(1 for url, n in callbacks.items() if url and n > 1),
            "duplicate_bodies": sum(1 for n in bodies.values() if n > 1),
            "arrivals": arrivals,
            "per_second": per_second,  # arrivals in each whole second from the first
        }

    # -- the application ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages.json", self._list)
        app.router.add_get("/_stats", self._stats)
        app.router.add_get("/_messages", self._list_messages)
        app.router.add_post("/_reset", self._reset)
        return app

    async def stop_waiting(self) -> None:
        """Let slow answers go at once (on shutdown)."""
        if self._stopping is not None:
            self._stopping.set()

    async def _create(self, request: web.Request) -> web.StreamResponse:
        record = RequestRecord(time.monotonic())
        with self._lock:  # recorded on arrival, so an unanswered request is seen too
            self._requests.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            answer = await self._answer(request, record.arrival)
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            record.to, record.status = answer.to, answer.status
            self._statuses[answer.status] += 1
            if answer.accepted is not None:
                self._keep(answer.accepted)
        if answer.drop:
            # The message exists; the client gets no answer at all (its connection just ends).
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp stops handling the request quietly
        return web.Response(
            status=answer.status,
            body=json.dumps(answer.payload).encode(),
            content_type="application/json",
        )

    async def _answer(self, request: web.Request, arrival: float) -> _Answer:
        b = self.behaviour
        await self._latency()
        if not self._authorised(request):
            return _Answer.error(20003, None)
        try:
            form = await request.post()
        except ConnectionResetError:  # the client went away (a killed process): nothing created
            return _Answer(0, {}, None, drop=True)
        params = {key: str(value) for key, value in form.items()}
        to = params.get("To")
        roll = self._random.random()
        if roll < b.throttle_429:
            return _Answer.error(20429, to)
        if roll < b.throttle_429 + b.fail_500:
            return _Answer.error(20500, to)
        if not to:
            return _Answer.error(21604, to)
        if not params.get("Body"):
            return _Answer.error(21602, to)
        if not params.get("From") and not params.get("MessagingServiceSid"):
            return _Answer.error(21603, to)
        if to in b.reject:
            return _Answer.error(b.reject[to], to)
        if to in b.slow:
            await self._wait(b.slow[to])
        created = self._clock()
        resource = _message_resource(b.account_sid, params, _new_sid(), created, None)
        accepted = {
            **params, "sid": resource["sid"], "arrival": arrival, "created": created.timestamp(),
        }  # fmt: skip
        if to in b.lose_answer:
            with self._lock:
                self._keep(accepted)  # Twilio has it, whatever happens to the answer
            await self._wait(3600)
            return _Answer(201, resource, to, None)
        faults = b.throttle_429 + b.fail_500
        if roll < faults + b.accept_then_500:
            failed = _Answer.error(20500, to)
            return _Answer(failed.status, failed.payload, to, accepted)
        if roll < faults + b.accept_then_500 + b.accept_then_drop:
            return _Answer(0, {}, to, accepted, drop=True)
        return _Answer(201, resource, to, accepted)

    async def _list(self, request: web.Request) -> web.Response:
        """Twilio's Message list: filters To, From, DateSent, DateSent< and DateSent>; sorted by
        date_sent, newest first; pages of PageSize (50 by default, at most 1000) by Page and
        PageToken, with Twilio's page fields (`messages`, `next_page_uri`, ...).

        The DateSent filters compare `date_sent`, which a message has only once it has left the
        queue: a queued message matches none of them. A day (YYYY-MM-DD) means that whole UTC day
        ("on", "on and after", "on and before"); a full timestamp (what the SDK sends for a
        datetime) is compared to the second, inclusively."""
        await self._latency()
        b = self.behaviour
        with self._lock:
            self._list_queries.append(dict(request.query))
        if not self._authorised(request):
            return self._list_answer(_Answer.error(20003, None))
        if self._random.random() < b.list_fail_500:
            return self._list_answer(_Answer.error(20500, None))
        query = request.query
        try:
            match = _date_filter(query)
            size = int(query.get("PageSize", PAGE_SIZE))
            page = int(query.get("Page", 0))
        except ValueError:
            return self._list_answer(_Answer.error(20001, None))
        if not 1 <= size <= MAX_PAGE_SIZE or page < 0:
            return self._list_answer(_Answer.error(20001, None))
        now = self._clock()
        with self._lock:
            to = query.get("To")
            stored = list(self._messages if to is None else self._by_to.get(to, []))
        matched: list[tuple[datetime | None, datetime, dict[str, Any]]] = []
        for message in stored:
            created = datetime.fromtimestamp(message["created"], UTC)
            if created + timedelta(seconds=b.list_lag_seconds) > now:
                continue
            sent = _sent_at(created, b.queued_seconds, now)
            if query.get("To") not in (None, message.get("To")):
                continue
            if query.get("From") not in (None, message.get("From")):
                continue
            if match(sent):
                matched.append((sent, created, message))
        # Newest first by date_sent; messages not sent yet (no date_sent) come before them all.
        matched.sort(key=_newest_first)
        found = [
            _message_resource(b.account_sid, message, message["sid"], created, sent)
            for sent, created, message in matched
        ]
        start = page * size
        token = query.get("PageToken")
        if token:
            after = [i for i, m in enumerate(found) if "PA" + m["sid"] == token]
            if not after:
                return self._list_answer(_Answer.error(20001, None))
            start = after[0] + 1
        items = found[start : start + size]
        base = request.path
        filters = {k: v for k, v in query.items() if k not in {"Page", "PageSize", "PageToken"}}

        def uri(page_number: int, page_token: str | None = None) -> str:
            params = {**filters, "PageSize": str(size), "Page": str(page_number)}
            if page_token:
                params["PageToken"] = page_token
            return f"{base}?{urlencode(params)}"

        more = start + size < len(found)
        payload = {
            "messages": items,
            "page": page,
            "page_size": size,
            "start": start,
            "end": start + max(len(items) - 1, 0),
            "uri": uri(page, token),
            "first_page_uri": uri(0),
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "next_page_uri": uri(page + 1, "PA" + items[-1]["sid"]) if more and items else None,
        }
        return self._list_answer(_Answer(200, payload, None))

    def _list_answer(self, answer: _Answer) -> web.Response:
        with self._lock:
            self._list_requests[answer.status] += 1
        return web.json_response(answer.payload, status=answer.status)

    async def _latency(self) -> None:
        b = self.behaviour
        delay = b.latency_ms
        if b.jitter_ms:
            delay += self._random.uniform(-b.jitter_ms, b.jitter_ms)
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    def _authorised(self, request: web.Request) -> bool:
        b = self.behaviour
        credentials = request.headers.get("Authorization")
        return request.match_info["account_sid"] == b.account_sid and credentials == self._expected(
            b
        )

    def _expected(self, b: Behaviour) -> str:
        """The Authorization header for the behaviour's credentials (encoded once)."""
        key = (b.account_sid, b.auth_token)
        if self._auth_key != key:
            self._auth_key, self._auth = key, aiohttp.encode_basic_auth(*key)
        return self._auth

    async def _wait(self, seconds: float) -> None:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _list_messages(self, _: web.Request) -> web.Response:
        return web.json_response(self.messages())

    async def _reset(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    payload: dict[str, Any]
    to: str | None
    accepted: dict[str, Any] | None = None  # what `messages()` records
    drop: bool = False  # close the connection instead of answering

    @staticmethod
    def error(code: int, to: str | None) -> _Answer:
        status, message = ERRORS.get(code, (400, "Error {code}"))
        payload = {
            "code": code,
            "message": message.format(to=to or "", code=code),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return _Answer(status, payload, to)


def _new_sid() -> str:
    return "SM" + os.urandom(16).hex()


def _sent_at(created: datetime, queued_seconds: float, now: datetime) -> datetime | None:
    """When the message left the queue, or None while it is still queued."""
    sent = created + timedelta(seconds=queued_seconds)
    return sent if sent <= now else None


def _newest_first(item: tuple[datetime | None, datetime, object]) -> tuple[float, float]:
    sent, created, _ = item
    return (-(sent.timestamp() if sent else math.inf), -created.timestamp())


def _date_filter(query: Mapping[str, str]) -> Callable[[datetime | None], bool]:
    """The DateSent filters of a list request, as one test of a message's date_sent."""
    tests: list[Callable[[datetime], bool]] = []
    for name, compare in (("DateSent", "="), ("DateSent>", ">"), ("DateSent<", "<")):
        raw = query.get(name)
        if raw is None:
            continue
        value = _parse_date(raw)
        if isinstance(value, datetime):
            moment = value
            if compare == "=":
                tests.append(lambda sent, t=moment: sent.replace(microsecond=0) == t)
            elif compare == ">":
                tests.append(lambda sent, t=moment: sent >= t)
            else:
                tests.append(lambda sent, t=moment: sent.replace(microsecond=0) <= t)
        else:
            day = value
            if compare == "=":
                tests.append(lambda sent, d=day: sent.date() == d)
            elif compare == ">":
                tests.append(lambda sent, d=day: sent.date() >= d)
            else:
                tests.append(lambda sent, d=day: sent.date() <= d)
    if not tests:
        return lambda sent: True
    return lambda sent: sent is not None and all(test(sent) for test in tests)


def _parse_date(raw: str) -> date | datetime:
    """A day (YYYY-MM-DD) or a UTC moment: ISO 8601 (what the SDK sends), or RFC 2822."""
    text = raw.strip()
    if len(text) == 10:
        return date.fromisoformat(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise ValueError(f"not a date: {raw!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Twilio reads dates as GMT
    return moment.astimezone(UTC)


def _message_resource(
    account_sid: str,
    params: Mapping[str, Any],
    sid: str,
    created: datetime,
    sent: datetime | None,
) -> dict[str, Any]:
    body = params["Body"]
    service = params.get("MessagingServiceSid")
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
    queued = "accepted" if service and not params.get("From") else "queued"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": format_datetime(created.astimezone(UTC)),
        "date_sent": format_datetime(sent.astimezone(UTC)) if sent else None,
        "date_updated": format_datetime((sent or created).astimezone(UTC)),
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": params.get("From"),  # with only a messaging service, Twilio picks one later
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": str(_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "sent" if sent else queued,
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": params["To"],
        "uri": uri,
    }


def _segments(body: str) -> int:
    """Roughly as Twilio counts: GSM-7 (taken as ASCII here) or UCS-2, with concatenation."""
    single, part = (160, 153) if body.isascii() else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // part)


# -- running it ----------------------------------------------------------------------------------


async def _start(
    server: TwilioApiServer, host: str, port: int
) -> tuple[web.AppRunner, asyncio.Event]:
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    sockets = runner.addresses
    bound_port = sockets[0][1]
    server.base_url = f"http://{host}:{bound_port}"
    return runner, asyncio.Event()


async def _stop(server: TwilioApiServer, runner: web.AppRunner) -> None:
    await server.stop_waiting()
    await runner.cleanup()


@contextmanager
def serve_in_thread(
    behaviour: Behaviour | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock = _utc_now,
) -> Iterator[TwilioApiServer]:
    """The server on its own event loop in a background thread; yields it once listening.
    `clock` dates its messages (give the test's fake clock to agree with the client)."""
    server = TwilioApiServer(behaviour, clock)
    ready = threading.Event()
    failed: list[BaseException] = []
    loop_and_stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        try:
            runner, stop = await _start(server, host, port)
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            return
        loop_and_stop.append((asyncio.get_running_loop(), stop))
        ready.set()
        try:
            await stop.wait()
        finally:
            await _stop(server, runner)

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="twilio-api", daemon=True)
    thread.start()
    ready.wait()
    if failed:
        thread.join()
        raise failed[0]
    loop, stop = loop_and_stop[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()


class ServerProcess:
    """A server in a child process, driven over HTTP."""

    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stats")  # type: ignore[no-any-return]

    def messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_messages")  # type: ignore[no-any-return]

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: it closes down cleanly
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _call(self, method: str, path: str) -> Any:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(self.base_url + path, method=method, data=data)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)


@contextmanager
def serve_in_process(
    behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[ServerProcess]:
    """The server in a child process (`python -m tests.servers.twilio_api`); yields once
    listening, and stops it afterwards."""
    args = [sys.executable, "-m", "tests.servers.twilio_api", f"--host={host}", f"--port={port}"]
    args += (behaviour or Behaviour()).to_args()
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # "listening http://127.0.0.1:PORT", or EOF if it failed
    server = ServerProcess(process, line.split()[-1] if line.startswith("listening ") else "")
    try:
        if not server.base_url:
            raise RuntimeError(f"the Twilio API server did not start (exit {process.wait()})")
        yield server
    finally:
        server.stop()


# -- status callbacks, as Twilio sends them ---------------------------------------------------


def status_callback_params(
    message: Mapping[str, Any],
    status: str,
    *,
    error_code: int | None = None,
    account_sid: str = ACCOUNT_SID,
) -> dict[str, str]:
    """The form Twilio POSTs to a StatusCallback for an accepted `message` (an item of
    `messages()`): status is queued, sent, delivered, undelivered or failed."""
    params = {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "MessageSid": str(message["sid"]),
        "SmsSid": str(message["sid"]),
        "MessageStatus": status,
        "SmsStatus": status,
        "To": str(message["To"]),
    }
    if message.get("From"):
        params["From"] = str(message["From"])
    if message.get("MessagingServiceSid"):
        params["MessagingServiceSid"] = str(message["MessagingServiceSid"])
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params


def sign_callback(url: str, params: Mapping[str, str], auth_token: str = AUTH_TOKEN) -> str:
    """X-Twilio-Signature for a POST of `params` to `url`, computed by the SDK as Twilio does."""
    signature: str = RequestValidator(auth_token).compute_signature(url, dict(params))
    return signature


async def post_status_callback(
    url: str,
    params: Mapping[str, str],
    *,
    auth_token: str = AUTH_TOKEN,
    signature: str | None = None,
) -> tuple[int, str]:
    """POST a signed status callback to `url` (a wrong `signature` can be given to test
    rejection); returns the answer's status and text."""
    headers = {"X-Twilio-Signature": signature or sign_callback(url, params, auth_token)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=dict(params), headers=headers) as answer,
    ):
        return answer.status, await answer.text()


# -- the command line -------------------------------------------------------------------------


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.rpartition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NUMBER=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--fail-500", type=float, default=0.0, help="fraction answered 500")
    parser.add_argument("--throttle-429", type=float, default=0.0, help="fraction answered 429")
    parser.add_argument(
        "--accept-then-500", type=float, default=0.0, help="fraction created, then answered 500"
    )
    parser.add_argument(
        "--accept-then-drop", type=float, default=0.0, help="fraction created, then hung up"
    )
    parser.add_argument("--list-fail-500", type=float, default=0.0, help="of list requests")
    parser.add_argument("--queued-seconds", type=float, default=0.0)
    parser.add_argument("--list-lag-seconds", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--account-sid", default=ACCOUNT_SID)
    parser.add_argument("--auth-token", default=AUTH_TOKEN)
    parser.add_argument("--reject", type=_pair, action="append", default=[], help="NUMBER=CODE")
    parser.add_argument("--slow", type=_pair, action="append", default=[], help="NUMBER=SECONDS")
    parser.add_argument("--lose-answer", action="append", default=[], help="NUMBER")
    options = parser.parse_args(argv)
    behaviour = Behaviour(
        latency_ms=options.latency_ms,
        jitter_ms=options.jitter_ms,
        fail_500=options.fail_500,
        throttle_429=options.throttle_429,
        accept_then_500=options.accept_then_500,
        accept_then_drop=options.accept_then_drop,
        list_fail_500=options.list_fail_500,
        queued_seconds=options.queued_seconds,
        list_lag_seconds=options.list_lag_seconds,
        seed=options.seed,
        reject={to: int(code) for to, code in options.reject},
        slow={to: float(seconds) for to, seconds in options.slow},
        lose_answer=set(options.lose_answer),
        account_sid=options.account_sid,
        auth_token=options.auth_token,
    )
    asyncio.run(_serve_until_signalled(TwilioApiServer(behaviour), options.host, options.port))


async def _serve_until_signalled(server: TwilioApiServer, host: str, port: int) -> None:
    runner, stop = await _start(server, host, port)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening {server.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await _stop(server, runner)


if __name__ == "__main__":
    main()
