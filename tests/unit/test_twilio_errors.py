"""How a failed Twilio request becomes a Failure: facts only, never Twilio's message text."""

from __future__ import annotations

import aiohttp
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.response import Response

from reminder_service.channels.twilio_sms import TwilioSmsChannel, failure_from
from reminder_service.domain.failures import Failure, FailureKind
from reminder_service.settings import TwilioSettings

NUMBER = "+447700900123"
URI = "/Accounts/AC00/Messages.json"


def rest_error(status: int, code: int | None, message: str = "") -> TwilioRestException:
    return TwilioRestException(status, URI, f"Unable to create record: {message}", code, "POST")


def test_a_twilio_error_gives_status_and_code_but_not_the_message() -> None:
    exc = rest_error(400, 21211, f"The 'To' number {NUMBER} is not a valid phone number.")

    failure = failure_from(exc, 10.0)

    assert failure == Failure("twilio", FailureKind.HTTP, 400, "21211", "request refused")
    assert NUMBER not in failure.describe()


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (401, "credentials rejected"),
        (429, "too many requests"),
        (503, "Twilio server error"),
        (404, "request refused"),
    ],
)
def test_the_detail_is_a_fixed_text_for_the_status(status: int, detail: str) -> None:
    failure = failure_from(rest_error(status, 20000 + status), 10.0)

    assert failure is not None
    assert failure.detail == detail


@pytest.mark.parametrize(
    ("status", "maybe"), [(500, True), (502, True), (503, True), (504, True), (429, False),
                          (400, False), (401, False)]
)  # fmt: skip
def test_a_5xx_may_have_created_the_message_a_4xx_did_not(status: int, maybe: bool) -> None:
    failure = failure_from(rest_error(status, 20000 + status), 10.0)

    assert failure is not None
    assert failure.maybe_accepted is maybe


def test_a_list_page_that_cannot_be_read_is_an_http_failure() -> None:
    answer = Response(500, f'{{"code": 20500, "message": "about {NUMBER}"}}')
    exc = TwilioException("Unable to fetch page", answer)  # what the SDK raises for a list

    failure = failure_from(exc, 10.0)

    assert failure == Failure("twilio", FailureKind.HTTP, 500, None, "Twilio server error")
    assert NUMBER not in failure.describe()


def test_an_answer_without_a_twilio_code_has_no_code() -> None:
    # The SDK puts the HTTP status where the code goes when the answer has none (a proxy's
    # HTML error page, say); that is not a Twilio code.
    failure = failure_from(rest_error(502, 502), 10.0)

    assert failure is not None
    assert (failure.status, failure.code) == (502, None)


def test_an_rfc_9457_service_error_is_an_http_failure() -> None:
    exc = TwilioServiceException(
        "https://www.twilio.com/docs/errors/21211",
        "Invalid 'To' Phone Number",
        400,
        21211,
        detail=f"{NUMBER} is not valid",
        method="POST",
        uri=URI,
    )

    failure = failure_from(exc, 10.0)

    assert failure == Failure("twilio", FailureKind.HTTP, 400, "21211", "request refused")


@pytest.mark.parametrize(
    "exc", [TimeoutError(), aiohttp.ServerTimeoutError("read"), aiohttp.SocketTimeoutError()]
)
def test_a_timeout_after_the_request_went_out_may_have_been_accepted(exc: BaseException) -> None:
    assert failure_from(exc, 2.5) == Failure(
        "twilio", FailureKind.TIMEOUT, detail="no answer within 2.5s", maybe_accepted=True
    )


def test_a_connect_timeout_sent_nothing() -> None:
    failure = failure_from(aiohttp.ConnectionTimeoutError(), 2.5)
    assert failure == Failure("twilio", FailureKind.CONNECTION, detail="could not connect")


@pytest.mark.parametrize(
    ("exc", "detail", "maybe_accepted"),
    [
        (aiohttp.ServerDisconnectedError(), "ServerDisconnectedError", True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "ClientOSError", True),
        (ConnectionRefusedError(111, "refused"), "ConnectionRefusedError", False),
        (aiohttp.ClientPayloadError("cut short"), "ClientPayloadError", True),
    ],
)
def test_connection_errors_are_connection_failures(
    exc: BaseException, detail: str, maybe_accepted: bool
) -> None:
    expected = Failure(
        "twilio", FailureKind.CONNECTION, detail=detail, maybe_accepted=maybe_accepted
    )
    assert failure_from(exc, 10.0) == expected


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("sid")])
def test_anything_else_is_not_a_send_failure(exc: BaseException) -> None:
    assert failure_from(exc, 10.0) is None


def test_the_channel_is_built_without_a_running_loop_or_any_io() -> None:
    settings = TwilioSettings("AC" + "0" * 32, "token", "+447700900001", timeout_seconds=1.0)

    channel = TwilioSmsChannel(settings, concurrency=5, rate_limit=10.0)

    assert channel._http._session is None  # made on the first send, inside the loop


@pytest.mark.parametrize(("concurrency", "rate"), [(0, 10.0), (5, 0.0)])
def test_concurrency_and_rate_must_be_positive(concurrency: int, rate: float) -> None:
    settings = TwilioSettings("AC" + "0" * 32, "token", "+447700900001")

    with pytest.raises(ValueError, match="must be"):
        TwilioSmsChannel(settings, concurrency=concurrency, rate_limit=rate)
