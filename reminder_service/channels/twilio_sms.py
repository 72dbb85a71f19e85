"""SMS through Twilio's official SDK, on one aiohttp session we own.

- No retries anywhere below us: a retried POST can send a text twice, so a failed send comes back
  as a ChannelError and the reminders table decides when to try again.
- Explicit timeouts (TWILIO_TIMEOUT_SECONDS) for connecting and for the whole request.
- At most `concurrency` requests in flight, each on its own connection: a slow answer holds one
  slot and delays no other send.
- A message goes from its clinic's own sender (`OutgoingSms.sender`: a number, or a Messaging
  Service, passed as `messaging_service_sid=` instead of `from_`), else from the configured one.
- At most `rate_limit` requests a second from each sender (its number or messaging service),
  paced by a SendRate (send_rate.py) per sender that holds only a few sends, so no burst
  overshoots the rate: this process's own by default, or one that every process on the same
  PostgreSQL database shares (bootstrap chooses).
- TWILIO_API_BASE_URL, when set, replaces https://api.twilio.com (a staging proxy, a test server).
- `find_accepted` asks Twilio's Message list whether an attempt whose outcome is unknown (a lost
  answer, a 5xx, a crash mid-send) was accepted, so the dispatcher does not send it twice.

Errors are reported as facts (status, Twilio's code); never with Twilio's message text, which
often quotes the recipient's number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, timedelta
from typing import Any, overload
from urllib.parse import urlencode

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from yarl import URL

from ..domain.failures import Failure, FailureKind
from ..settings import TwilioSettings
from .base import AcceptedSms, ChannelError, OutgoingSms, Receipt, SentQuery, SmsSender, body_sha256
from .send_rate import LocalSendRate, SendRate, SendRateUnavailable
from .slots import Slots

log = logging.getLogger(__name__)

PROVIDER = "twilio"
# Twilio's clock and ours may disagree: a lookup reaches this much further back.
CLOCK_SKEW = timedelta(minutes=1)
LIST_PAGE_SIZE = 1000  # Twilio's largest: one request covers most numbers' whole history


class TwilioSmsChannel:
    def __init__(
        self,
        settings: TwilioSettings,
        *,
        concurrency: int,
        rate_limit: float,
        send_rate: SendRate | None = None,
        send_rate_for: Callable[[str], SendRate] | None = None,
        senders: Iterable[SmsSender] = (),
    ) -> None:
        """`send_rate` paces the configured sender, `send_rate_for(sender)` makes the pace of
        each other one (default: this process's own, at `rate_limit`). `senders` are the
        clinics' own, which a lookup also accepts messages from."""
        if concurrency < 1:
            raise ValueError("concurrency must be 1 or more")
        if rate_limit <= 0:
            raise ValueError("rate_limit must be more than 0")
        self._settings = settings
        self._concurrency = concurrency
        self._rate_limit = rate_limit
        self._send_rate_for = send_rate_for
        self._default_sender = SmsSender(settings.from_number, settings.messaging_service_sid)
        self._send_rates: dict[str, SendRate] = {}
        if send_rate is not None:
            self._send_rates[self._default_sender.key] = send_rate
        every = [self._default_sender, *senders]
        self._numbers = {s.from_number for s in every if s.from_number}
        self._services = {s.messaging_service_sid for s in every if s.messaging_service_sid}
        self._http = AiohttpTwilioClient(concurrency, settings.timeout_seconds)
        client = Client(settings.account_sid, settings.auth_token, http_client=self._http)
        if settings.api_base_url:
            # The SDK has no option for another host: every API domain joins its `base_url`
            # with the versioned path, so Messages go to <base>/2010-04-01/Accounts/...
            client.api.base_url = settings.api_base_url.rstrip("/")
            # TWILIO_EDGE / TWILIO_REGION would rewrite the host name; not on a custom base.
            client.edge = client.region = None
        self._messages = client.messages
        # Bound to the running loop, so made on the first send (we are built outside the loop).
        self._slots: Slots | None = None

    async def send_sms(self, message: OutgoingSms) -> Receipt:
        chosen = message.sender or self._default_sender
        slots, limiter = await self._flow_control(chosen)
        # The SDK's create(): `from_` or `messaging_service_sid` (Twilio then picks the number).
        sender: dict[str, str] = (
            {"messaging_service_sid": chosen.messaging_service_sid}
            if chosen.messaging_service_sid
            else {"from_": chosen.from_number}
        )
        if message.status_callback:
            sender["status_callback"] = message.status_callback
        # A slot first, then the limiter: a send leaves the moment the limiter lets it, so the
        # requests Twilio sees are spaced exactly as the limiter spaces them.
        async with slots:
            try:
                await limiter.acquire()
            except SendRateUnavailable as exc:
                raise ChannelError(Failure(PROVIDER, FailureKind.LOCAL, detail=str(exc))) from None
            try:
                created = await self._messages.create_async(
                    to=message.to, body=message.body, **sender
                )
            except Exception as exc:
                failure = failure_from(exc, self._settings.timeout_seconds)
                if failure is None:
                    raise
                log.debug("reminder %s: not sent: %s", message.reminder_id, failure.describe())
                raise ChannelError(failure) from None  # the cause may quote the number
        sid = getattr(created, "sid", None)
        if not isinstance(sid, str) or not sid:
            raise ChannelError(Failure(PROVIDER, FailureKind.HTTP, detail="answer had no SID"))
        return Receipt(provider_id=sid)

    async def find_accepted(self, query: SentQuery) -> list[AcceptedSms]:
        """Messages from one of our senders (the configured one or a clinic's) to `query.to`
        with the same body, created since the attempt began (less CLOCK_SKEW), oldest first.

        First the messages sent since then (`DateSent>`). A message still in Twilio's queue has
        no date_sent and matches no DateSent filter, so when that finds nothing, the number's
        whole list is read (without assuming where queued messages sort) and filtered on
        date_created here. Reads take no send slot and nothing from the rate limiter: Twilio's
        messages-per-second limit is on sending.

        What this cannot see, so a second copy can still go: a message Twilio's list does not
        show yet (its list has been reported to lag; the message's status callback then notes
        the duplicate for staff); a body Twilio stored changed (a trial account's prefix, Smart
        Encoding on a messaging service); clocks more than CLOCK_SKEW apart."""
        since = (query.since - CLOCK_SKEW).astimezone(UTC)
        sender: dict[str, Any] = {}
        if len(self._numbers) == 1 and not self._services:
            # Twilio filters on one From only, and not on the service: else filtered here.
            (sender["from_"],) = self._numbers
        try:
            sent = await self._messages.list_async(
                to=query.to, date_sent_after=since, page_size=LIST_PAGE_SIZE, **sender
            )
            found = self._matching(sent, query)
            if not found:
                everything = await self._messages.list_async(
                    to=query.to, page_size=LIST_PAGE_SIZE, **sender
                )
                found = self._matching(everything, query)
        except Exception as exc:
            failure = failure_from(exc, self._settings.timeout_seconds)
            if failure is None:
                raise
            log.debug("lookup failed: %s", failure.describe())
            raise ChannelError(failure) from None  # the cause may quote the number
        return sorted(found, key=lambda m: m.accepted_at or since)

    def _matching(self, messages: list[Any], query: SentQuery) -> list[AcceptedSms]:
        since = query.since - CLOCK_SKEW
        found = []
        for message in messages:
            created = message.date_created
            if (
                message.direction != "outbound-api"
                or message.to != query.to
                or not self._ours(message)
                or created is None
                or created < since
                or message.body is None
                or body_sha256(message.body) != query.body_sha256
            ):
                continue
            code = message.error_code
            found.append(
                AcceptedSms(
                    PROVIDER,
                    message.sid,
                    created,
                    str(message.status),
                    str(code) if code not in (None, 0) else None,
                )
            )
        return found

    def _ours(self, message: Any) -> bool:
        """Sent from one of our senders: one of our numbers, or through one of our services
        (its From is then the number Twilio picked; and a message sent from a number may carry
        a default service SID Twilio assigned, so either one matching is enough)."""
        return message.from_ in self._numbers or message.messaging_service_sid in self._services

    async def aclose(self) -> None:
        await self._http.close()
        for rate in self._send_rates.values():
            await rate.aclose()
        self._slots = None

    async def _flow_control(self, sender: SmsSender) -> tuple[Slots, SendRate]:
        if self._slots is None:
            self._slots = Slots(self._concurrency)
        # One pace per sender, as Twilio counts its limit.
        rate = self._send_rates.get(sender.key)
        if rate is None:
            make = self._send_rate_for
            rate = make(sender.key) if make else LocalSendRate(self._rate_limit)
            self._send_rates[sender.key] = rate
        return self._slots, rate


def failure_from(exc: BaseException, timeout_seconds: float) -> Failure | None:
    """The facts of a failed request, or None for an exception that is not a send failure (a
    bug, a cancellation). Never Twilio's message text: it can quote the recipient's number."""
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = int(exc.status)
        code = exc.code
        # Without a Twilio code in the answer the SDK puts the HTTP status there instead.
        known = code is not None and str(code) != str(status)
        return Failure(
            PROVIDER,
            FailureKind.HTTP,
            status=status,
            code=str(code) if known else None,
            detail=_http_detail(status),
            # A 5xx says nothing of whether the message was stored before the fault (a gateway
            # answers 502/504 for a backend that may have finished); a 4xx (429 too) is a refusal.
            maybe_accepted=status >= 500,
        )
    if isinstance(exc, TwilioException) and len(exc.args) > 1 and isinstance(exc.args[1], Response):
        # A list page the SDK could not read ("Unable to fetch page"): the answer's status only.
        status = int(exc.args[1].status_code)
        return Failure(PROVIDER, FailureKind.HTTP, status=status, detail=_http_detail(status))
    # Before OSError and TimeoutError: no connection was made, so nothing was sent.
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return Failure(PROVIDER, FailureKind.CONNECTION, detail="could not connect")
    # Before OSError: TimeoutError is one, and so are aiohttp's timeouts.
    if isinstance(exc, TimeoutError):
        detail = f"no answer within {timeout_seconds:g}s"
        return Failure(PROVIDER, FailureKind.TIMEOUT, detail=detail, maybe_accepted=True)
    if isinstance(exc, aiohttp.ClientError | OSError):
        # E.g. the connection dropped after the request went out: like a timeout, the message
        # may or may not have been accepted. The exception's text is left out (it can hold URLs
        # with the account SID); its type is enough to tell cases apart.
        maybe = not isinstance(exc, ConnectionRefusedError)  # refused: nothing went out
        detail = type(exc).__name__
        return Failure(PROVIDER, FailureKind.CONNECTION, detail=detail, maybe_accepted=maybe)
    return None


def _http_detail(status: int) -> str:
    if status == 401:
        return "credentials rejected"
    if status == 429:
        return "too many requests"
    if status >= 500:
        return "Twilio server error"
    return "request refused"


class AiohttpTwilioClient(AsyncHttpClient):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's HTTP hook on one aiohttp session, never retrying.

    (The SDK's own AsyncTwilioHttpClient makes its session in the constructor, outside any loop,
    and can wrap it in aiohttp_retry.)
    """

    def __init__(self, concurrency: int, timeout_seconds: float) -> None:
        super().__init__(logger=log, is_async=True, timeout=timeout_seconds)
        self._limit = concurrency
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, connect=timeout_seconds, sock_connect=timeout_seconds
        )
        self._session: aiohttp.ClientSession | None = None
        self._credentials: tuple[tuple[str, str], str] | None = None
        self._urls: dict[str, URL] = {}

    async def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        session = self._open()
        sent_headers = dict(headers or {})
        if auth is not None:
            sent_headers["Authorization"] = self._authorization(auth)
        # The form is encoded here, once, as the SDK's Content-Type says; and every send goes
        # to the same Messages URL, parsed once. (aiohttp's FormData and URL parsing per request
        # were a fifth of the cost of a send.)
        body = None if data is None else urlencode(_pairs(data)).encode()
        response = await session.request(
            method.upper(),
            self._url(uri),
            params=_pairs(params),
            data=body,
            headers=sent_headers,
            timeout=self._timeout if timeout is None else _overall(timeout),
            allow_redirects=allow_redirects,
        )
        async with response:
            raw = await response.read()
        # Twilio answers JSON, which is UTF-8 (RFC 8259); a stray byte must not fail the send.
        return Response(response.status, raw.decode("utf-8", "replace"), response.headers)

    def _url(self, uri: str) -> URL:
        url = self._urls.get(uri)
        if url is None:
            if len(self._urls) > 64:  # list pages carry tokens: keep only a few
                self._urls.clear()
            url = self._urls[uri] = URL(uri)
        return url

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _authorization(self, auth: tuple[str, str]) -> str:
        # aiohttp.BasicAuth is deprecated (a DeprecationWarning); the header is the same.
        if self._credentials is None or self._credentials[0] != auth:
            self._credentials = (auth, aiohttp.encode_basic_auth(auth[0], auth[1]))
        return self._credentials[1]

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit), timeout=self._timeout
            )
        return self._session


def _overall(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds, connect=seconds, sock_connect=seconds)


@overload
def _pairs(values: None) -> None: ...
@overload
def _pairs(values: Mapping[str, object]) -> list[tuple[str, str]]: ...
def _pairs(values: Mapping[str, object] | None) -> list[tuple[str, str]] | None:
    """Form or query pairs; a list value repeats its key (MediaUrl=a&MediaUrl=b), as Twilio
    expects."""
    if values is None:
        return None
    pairs: list[tuple[str, str]] = []
    for key, value in values.items():
        items = value if isinstance(value, list | tuple) else [value]
        pairs.extend((key, str(item)) for item in items)
    return pairs
