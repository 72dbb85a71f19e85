"""The appointments API: JSON, CSV upload and FHIR in; an appointment's timeline out.

Every route here needs an API key (`Authorization: Bearer <key>` or `X-API-Key`). Bodies are
size-limited. JSON appointments are validated exactly as CSV rows are (the same converter), so a
phone number, email, zone or start is accepted or refused the same way whatever the source.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..importers.csv_mapping import LAYOUT_FIELDS, OPTIONAL_FIELDS
from ..importers.csv_rows import (
    FileRejected,
    ImportDefaults,
    RawRow,
    RowConverter,
    parse_csv,
)
from ..services.api_keys import ApiKeys
from ..services.fhir_import import apply_fhir
from ..services.importing import ImportItem, ImportService, ImportSummary
from ..services.previewing import NotFound, PreviewService

MAX_JSON_BYTES = 1024 * 1024
MAX_CSV_BYTES = 20 * 1024 * 1024
MAX_BATCH = 1000
FIELDS = (*LAYOUT_FIELDS, *OPTIONAL_FIELDS)


class AppointmentIn(BaseModel):
    """One appointment, with the CSV layout's fields and rules (see the README)."""

    appointment_id: str = Field(min_length=1, max_length=64)
    patient_id: str = Field(min_length=1, max_length=64)
    first_name: str = Field(default="", max_length=100)
    last_name: str = Field(default="", max_length=100)
    mobile: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=320)
    language: str = Field(default="", max_length=35)
    timezone: str = Field(default="", max_length=64)
    procedure: str = Field(min_length=1, max_length=32)
    start: str = Field(min_length=4, max_length=40, description="ISO 8601; naive = patient's zone")
    duration_minutes: int | None = Field(default=None, ge=1, le=1440)
    location: str = Field(default="", max_length=255)
    sedation: Literal["yes", "no", "unknown"] = "unknown"
    anticoagulant: Literal["yes", "no", "unknown"] = "unknown"
    status: Literal["booked", "cancelled"] = "booked"
    clinic: str = Field(default="", max_length=64)
    on_chemotherapy: Literal["yes", "no", "unknown"] = "unknown"
    diabetes_on_medication: Literal["yes", "no", "unknown"] = "unknown"
    sms_consent: str = Field(default="", max_length=64)
    deceased: Literal["yes", "no", ""] = ""
    do_not_contact: Literal["yes", "no", ""] = ""

    def raw(self, index: int) -> RawRow:
        values = self.model_dump()
        if values["duration_minutes"] is None:
            values["duration_minutes"] = ""
        return RawRow(index, tuple(str(values[name]) for name in FIELDS))


class ItemError(BaseModel):
    index: int  # 0-based position in the request's list
    field: str
    reason: str


class ImportAnswer(BaseModel):
    summary: dict[str, int]
    errors: list[ItemError]


def size_limited(limit: int) -> Callable[[Request], Awaitable[bytes]]:
    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"the body is over {limit} bytes")
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise HTTPException(413, f"the body is over {limit} bytes")
        return data

    return body


def build_router(
    importer: ImportService,
    previews: PreviewService,
    keys: ApiKeys,
    defaults: Callable[[str | None], ImportDefaults],
) -> APIRouter:
    def api_key(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> str:
        key = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        name = keys.name_for(key) if key else None
        if name is None:
            raise HTTPException(401, "an API key is required", {"WWW-Authenticate": "Bearer"})
        return name

    router = APIRouter(dependencies=[Depends(api_key)])

    # The bodies are read raw (to limit their size before parsing), so their schemas are
    # declared here for the OpenAPI document.
    one = AppointmentIn.model_json_schema()
    json_body = {"oneOf": [one, {"type": "array", "items": one, "maxItems": MAX_BATCH}]}

    @router.post(
        "/appointments",
        response_model=ImportAnswer,
        openapi_extra=_body("application/json", json_body),
    )
    async def post_appointments(
        body: Annotated[bytes, Depends(size_limited(MAX_JSON_BYTES))],
    ) -> JSONResponse:
        """One appointment (an object) or a batch (a list of up to 1,000)."""
        return _apply_json(body, importer, defaults(None))

    @router.get("/appointments/{appointment_id}")
    def get_appointment(appointment_id: str) -> dict[str, Any]:
        """The appointment and its reminder timeline (as `preview --json`)."""
        try:
            preview = previews.preview(appointment_id)
        except NotFound:
            raise HTTPException(404, "no such appointment") from None
        appointment = preview.appointment
        return {
            "appointment_id": appointment.external_id,
            "status": appointment.status.value,
            "start": appointment.start.isoformat(),
            "procedure": appointment.procedure,
            "protocol": preview.protocol_id,
            "confirmed_at": preview.confirmed_at.isoformat() if preview.confirmed_at else None,
            "timeline": [line.as_json() for line in preview.lines],
        }

    @router.post("/appointments/{appointment_id}/cancel", response_model=ImportAnswer)
    def cancel_appointment(appointment_id: str) -> JSONResponse:
        summary = importer.cancel(appointment_id, source="api")
        if summary is None:
            raise HTTPException(404, "no such appointment")
        return _answer(summary, [], rejected_all=False)

    @router.post(
        "/imports/csv",
        response_model=ImportAnswer,
        openapi_extra=_body("text/csv", {"type": "string"}),
    )
    async def post_csv(
        request: Request,
        body: Annotated[bytes, Depends(size_limited(MAX_CSV_BYTES))],
    ) -> JSONResponse:
        """A CSV file as the body (text/csv), in the default layout; rows report their line."""
        try:
            parsed = parse_csv(body, filename="upload.csv", defaults=defaults(None))
        except FileRejected as exc:
            raise HTTPException(422, str(exc)) from None
        summary = importer.apply(
            parsed.rows, source="api", label="POST /imports/csv", parse_errors=parsed.errors
        )
        errors = [ItemError(index=e.line, field=e.column, reason=e.reason) for e in summary.errors]
        return _answer(summary, errors, rejected_all=False)

    fhir_body = _body("application/fhir+json", {"type": "object"})

    @router.post("/fhir/Appointment", openapi_extra=fhir_body)
    @router.post("/fhir", openapi_extra=fhir_body)
    async def post_fhir(
        body: Annotated[bytes, Depends(size_limited(MAX_JSON_BYTES))],
    ) -> JSONResponse:
        """A FHIR R4 Appointment, or a batch/transaction Bundle with its Patients. Problems are
        answered with an OperationOutcome naming the element."""
        return _apply_fhir(body, importer, defaults(None))

    return router


def _apply_json(
    body: bytes, importer: ImportService, import_defaults: ImportDefaults
) -> JSONResponse:
    items = _appointments_from(body)
    converter = RowConverter(FIELDS, None, import_defaults)
    accepted: list[ImportItem] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        result = converter.convert(item.raw(index))
        if isinstance(result, list):
            errors += [ItemError(index=index, field=e.column, reason=e.reason) for e in result]
        else:
            accepted.append((index, result))
    summary = importer.apply(accepted, source="api", label="POST /appointments")
    errors += [ItemError(index=e.line, field=e.column, reason=e.reason) for e in summary.errors]
    return _answer(summary, errors, rejected_all=not accepted and bool(items))


def _apply_fhir(
    body: bytes, importer: ImportService, import_defaults: ImportDefaults
) -> JSONResponse:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _outcome(400, [_issue("error", "structure", "", "not JSON")])
    if not isinstance(document, dict):
        return _outcome(400, [_issue("error", "structure", "", "not a FHIR resource")])
    result = apply_fhir(importer, document, import_defaults)
    issues = [_issue(i.severity, i.code, i.expression, i.diagnostics) for i in result.issues]
    if result.summary is None:
        return _outcome(422, issues or [_issue("error", "required", "", "no appointment")])
    answer = _outcome(200, issues or [_issue("information", "informational", "", "applied")])
    answer.headers["X-Import-Summary"] = json.dumps(result.summary.counts())
    return answer


def _body(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


def _appointments_from(body: bytes) -> list[AppointmentIn]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not JSON") from None
    listed = data if isinstance(data, list) else [data]
    if len(listed) > MAX_BATCH:
        raise HTTPException(413, f"at most {MAX_BATCH} appointments a request")
    try:
        return [AppointmentIn.model_validate(item) for item in listed]
    except ValueError as exc:
        raise HTTPException(422, _validation_text(exc)) from None


def _validation_text(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors()
        )
    return str(exc)


def _answer(summary: ImportSummary, errors: list[ItemError], *, rejected_all: bool) -> JSONResponse:
    payload = ImportAnswer(summary=summary.counts(), errors=errors).model_dump()
    return JSONResponse(payload, status_code=422 if rejected_all else 200)


def _issue(severity: str, code: str, expression: str, diagnostics: str) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return issue


def _outcome(status: int, issues: list[dict[str, Any]]) -> JSONResponse:
    body = {"resourceType": "OperationOutcome", "issue": issues}
    return JSONResponse(body, status_code=status, media_type="application/fhir+json")
