"""The HTTP app: health, and Twilio's delivery status callbacks (signature checked here)."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from twilio.request_validator import RequestValidator

from ..services.delivery_status import DeliveryStatusService

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024  # a Twilio callback is a few hundred bytes


def create_app(
    engine: Engine,
    delivery: DeliveryStatusService,
    *,
    public_url: str,
    twilio_auth_token: str | None,
) -> FastAPI:
    app = FastAPI(title="reminder-service", docs_url="/docs", redoc_url=None)
    validator = RequestValidator(twilio_auth_token) if twilio_auth_token else None
    base = public_url.rstrip("/")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            log.exception("health check: database unreachable")
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.post("/webhooks/twilio/status", include_in_schema=False)
    async def twilio_status(request: Request) -> Response:
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
            log.warning("status callback rejected: bad or missing signature")
            return Response(status_code=403)
        reminder = request.query_params.get("reminder", "")
        if not reminder.isdigit():
            return Response(status_code=200)  # signed, but not one of our callbacks
        outcome = delivery.record(
            int(reminder),
            params.get("MessageSid", ""),
            params.get("MessageStatus", ""),
            params.get("ErrorCode") or None,
        )
        log.info("status callback for reminder %s: %s", reminder, outcome)
        return Response(status_code=200)

    return app
