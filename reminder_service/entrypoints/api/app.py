"""The HTTP app: health, Twilio's delivery status callbacks and inbound SMS (their signatures are
checked here, with the SDK's own validator, against the public URL Twilio called).

Database work never runs on the event loop: plain `def` handlers run in FastAPI's worker threads,
and `async def` ones read their body, then hand the rest to one (run_in_threadpool). A slow
import, or a webhook waiting for a lock, then never stalls /healthz or the other webhooks."""

from __future__ import annotations

import html
import logging
import re
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from ...services.delivery_status import DeliveryStatusService
from ...services.email_opt_outs import EmailOptOuts, TokenCheck
from ...services.health import check_database
from ...services.replies import ReplyService, storable_phone

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024  # a Twilio callback is a few hundred bytes
# A signature proves who sent a callback, not that its values fit our columns: ids and codes of
# shapes Twilio never sends are not ours (a refusal by the database would be a 500).
_TWILIO_SID = re.compile(r"[A-Za-z0-9]{2,64}")  # SM/MM + 32 hex digits in practice
_ERROR_CODE = re.compile(r"\d{1,16}")
_MAX_ROW_ID = 2**31 - 1  # the reminders table's INTEGER key


def _our_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) <= _MAX_ROW_ID


def create_app(
    engine: Engine,
    delivery: DeliveryStatusService,
    replies: ReplyService,
    *,
    public_url: str,
    twilio_auth_token: str | None,
    router: APIRouter | None = None,
    email_opt_outs: EmailOptOuts | None = None,
) -> FastAPI:
    app = FastAPI(title="reminder-service", docs_url="/docs", redoc_url=None)
    validator = RequestValidator(twilio_auth_token) if twilio_auth_token else None
    base = public_url.rstrip("/")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            check_database(engine)
        except Exception:
            log.exception("health check: database unreachable")
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def signed_params(request: Request) -> dict[str, str] | Response:
        """The posted form if Twilio signed it; otherwise the answer to give."""
        if validator is None:
            return Response("Twilio is not configured here", status_code=404)
        body = await request.body()
        if len(body) > MAX_WEBHOOK_BYTES:
            return Response(status_code=413)
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        # Twilio signs the URL it called: ours as the public sees it, query string included.
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not validator.validate(url, params, signature):
            log.warning("webhook %s rejected: bad or missing signature", request.url.path)
            return Response(status_code=403)
        return params

    @app.post("/webhooks/twilio/status", include_in_schema=False)
    async def twilio_status(request: Request) -> Response:
        params = await signed_params(request)
        if isinstance(params, Response):
            return params
        reminder = request.query_params.get("reminder", "")
        sid = params.get("MessageSid", "")
        if not _our_id(reminder) or not _TWILIO_SID.fullmatch(sid):
            return Response(status_code=200)  # signed, but not one of our callbacks
        code = params.get("ErrorCode") or ""
        outcome = await run_in_threadpool(
            delivery.record,
            int(reminder),
            sid,
            params.get("MessageStatus", ""),
            code if _ERROR_CODE.fullmatch(code) else None,
        )
        log.info("status callback for reminder %s: %s", reminder, outcome)
        return Response(status_code=200)

    @app.post("/webhooks/twilio/inbound", include_in_schema=False)
    async def twilio_inbound(request: Request) -> Response:
        params = await signed_params(request)
        if isinstance(params, Response):
            return params
        sid, phone = params.get("MessageSid", ""), params.get("From", "")
        if not _TWILIO_SID.fullmatch(sid) or not phone or not storable_phone(phone):
            return Response("MessageSid or From is not one Twilio sends", status_code=400)
        body = params.get("Body", "").replace("\x00", "\ufffd")  # no text column holds a NUL
        outcome = await run_in_threadpool(replies.handle, sid, phone, body)
        twiml = MessagingResponse()
        if outcome.answer:
            twiml.message(outcome.answer)
        return Response(str(twiml), media_type="application/xml")

    if email_opt_outs is not None:
        app.include_router(unsubscribe_router(email_opt_outs))
    if router is not None:
        app.include_router(router)
    return app


MAX_UNSUBSCRIBE_BYTES = 4096  # RFC 8058's body is "List-Unsubscribe=One-Click"
_REFUSED = {
    TokenCheck.MALFORMED: (
        400,
        "This is not an unsubscribe link. Please check it was copied whole.",
    ),
    TokenCheck.UNKNOWN: (
        404,
        "This unsubscribe link is not valid: it was not made here, or the email address it was "
        "for is no longer on record (reminders no longer go to that address).",
    ),
    TokenCheck.DISABLED: (404, "Unsubscribe links are not enabled on this service."),
}


def unsubscribe_router(opt_outs: EmailOptOuts) -> APIRouter:
    """List-Unsubscribe (RFC 8058): a POST opts the address out, with no login and no cookies;
    a GET (what a person's click, or a mail scanner following links, does) only shows a page
    with the button that POSTs, so no scanner unsubscribes anyone."""
    router = APIRouter()

    @router.get("/unsubscribe/{token}", include_in_schema=False)
    def confirm_page(token: str) -> HTMLResponse:
        check = opt_outs.check(token)
        if check is not TokenCheck.VALID:
            return _page(*_REFUSED[check])
        # The form posts to this same URL: relative, so it works behind any proxy path.
        form = (
            '<form method="post"><input type="hidden" name="List-Unsubscribe" '
            'value="One-Click"><button type="submit">Unsubscribe</button></form>'
        )
        text = (
            "Stop appointment reminder emails to this address? Text messages, if you get "
            "them, are not affected (reply STOP to stop those)."
        )
        return _page(200, text, form)

    @router.post("/unsubscribe/{token}", include_in_schema=False)
    async def one_click(token: str, request: Request) -> HTMLResponse:
        size = 0
        async for chunk in request.stream():  # read to the end, but never more than a little
            size += len(chunk)
            if size > MAX_UNSUBSCRIBE_BYTES:
                return _page(413, "That request is too large for an unsubscribe.")
        check = await run_in_threadpool(opt_outs.unsubscribe, token)
        if check is not TokenCheck.VALID:
            return _page(*_REFUSED[check])
        return _page(200, "Done: no more appointment reminder emails will go to this address.")

    return router


def _page(status: int, text: str, form: str = "") -> HTMLResponse:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Appointment reminders</title></head>"
        f"<body><p>{html.escape(text)}</p>{form}</body></html>"
    )
    # No caching, and no referrer: the token is in the URL.
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(body, status_code=status, headers=headers)
