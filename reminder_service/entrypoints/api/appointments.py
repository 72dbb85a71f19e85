"""The appointments API: JSON, CSV upload and FHIR in; an appointment's timeline out.

Every route here needs an API key (`Authorization: Bearer <key>` or `X-API-Key`). Bodies are
size-limited. JSON appointments are validated by the CSV layout's rules (importers.json_items),
so a phone number, email, zone or start is accepted or refused the same way whatever the source.
What the requests ask for is done by the services (json_import, csv_import, fhir_import): this
module reads the requests and answers them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ...services.api_keys import ApiKeys
from ...services.csv_import import (
    UploadRefused,
    import_csv_upload,
    mapping_named,
    mapping_sent,
)
from ...services.importing import ImportService, ImportSummary
from ...services.json_import import AppointmentIn, ImportDefaults, import_json_items
from ...services.previewing import NotFound, PreviewService
from .json_body import BadJson, parse_json
from .keys import require_key

MAX_JSON_BYTES = 1024 * 1024
MAX_CSV_BYTES = 20 * 1024 * 1024
MAX_BATCH = 1000
ClinicParam = Annotated[
    str | None,
    Query(max_length=64, description="The clinic these appointments are for, when they do not say"),
]


class ItemError(BaseModel):
    index: int  # 0-based position in the request's list
    field: str
    reason: str


class ImportAnswer(BaseModel):
    summary: dict[str, int]
    errors: list[ItemError]
    # Imported, but worth a look: a booking already in the past, a caregiver's number dropped
    # (index and field as errors').
    warnings: list[ItemError] = []


def size_limited(limit: int) -> Callable[[Request], Awaitable[bytes]]:
    """The body, read on the event loop. Handlers taking it parse, import and use the database in
    a worker thread (as a plain `def`, which FastAPI runs in one, or through run_in_threadpool),
    so the loop keeps serving others."""

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"the body is over {limit} bytes")
        data = bytearray()  # grows in place: `bytes +=` would copy the whole body at every chunk
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise HTTPException(413, f"the body is over {limit} bytes")
        return bytes(data)

    return body


def build_router(
    importer: ImportService,
    previews: PreviewService,
    keys: ApiKeys,
    defaults: Callable[[str | None], ImportDefaults],
    *,
    clinics: Collection[str],
    mappings_dir: Path,
) -> APIRouter:
    def feed_defaults(clinic: str | None) -> ImportDefaults:
        """The clinic a request's appointments are for, when an item does not say: its numbers
        are read in that clinic's country."""
        problem = unknown_clinic(clinic)
        if problem:
            raise HTTPException(422, problem)
        return defaults(clinic)

    def unknown_clinic(clinic: str | None) -> str:
        return (
            f"clinic {clinic[:64]!r} is not configured" if clinic and clinic not in clinics else ""
        )

    router = APIRouter(dependencies=[Depends(require_key(keys))])

    # The bodies are read raw (to limit their size before parsing), so their schemas are
    # declared here for the OpenAPI document.
    one = AppointmentIn.model_json_schema()
    json_body = {"oneOf": [one, {"type": "array", "items": one, "maxItems": MAX_BATCH}]}

    @router.post(
        "/appointments",
        response_model=ImportAnswer,
        openapi_extra=_body("application/json", json_body),
    )
    def post_appointments(
        body: Annotated[bytes, Depends(size_limited(MAX_JSON_BYTES))],
        clinic: ClinicParam = None,
    ) -> JSONResponse:
        """One appointment (an object) or a batch (a list of up to 1,000). Each item is validated
        on its own: a bad one is reported with its index and never fails the others."""
        return _apply_json(body, importer, feed_defaults(clinic))

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
            "confirmation": preview.confirmation.as_json() if preview.confirmation else None,
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
        clinic: ClinicParam = None,
        mapping: Annotated[
            str | None,
            Query(max_length=100, description="A mapping in config/mappings/, by name"),
        ] = None,
    ) -> JSONResponse:
        """A CSV file: the body as text/csv, or multipart/form-data with the file in `file` and
        its mapping (YAML) in `mapping`. `?mapping=NAME` uses config/mappings/NAME.yaml. Rows
        report their line."""
        sent = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            body, sent = await _csv_and_mapping(request.headers, body)
        if mapping is not None and sent is not None:
            raise HTTPException(422, "send a mapping or name one, not both")
        import_defaults = feed_defaults(clinic)

        def load_and_apply() -> JSONResponse:
            try:
                layout = (
                    mapping_named(mappings_dir, mapping)
                    if mapping is not None
                    else mapping_sent(sent)
                    if sent is not None
                    else None
                )
                summary = import_csv_upload(
                    body, importer, import_defaults, layout, label="POST /imports/csv"
                )
            except UploadRefused as exc:
                raise HTTPException(422, str(exc)) from None
            return _answer(summary, _item_errors(summary), rejected_all=False)

        # Reading the mapping, parsing and importing a file of up to 20 MB: in a worker thread,
        # never on the loop.
        return await run_in_threadpool(load_and_apply)

    fhir_body = _body("application/fhir+json", {"type": "object"})

    @router.post("/fhir/Appointment", openapi_extra=fhir_body)
    @router.post("/fhir", openapi_extra=fhir_body)
    def post_fhir(
        body: Annotated[bytes, Depends(size_limited(MAX_JSON_BYTES))],
        clinic: ClinicParam = None,
    ) -> JSONResponse:
        """A FHIR R4 Appointment, or a batch/transaction Bundle with its Patients. Problems are
        answered with an OperationOutcome naming the element."""
        problem = unknown_clinic(clinic)
        if problem:
            return _outcome(422, [_issue("error", "not-found", "", problem)])
        return _apply_fhir(body, importer, defaults(clinic))

    return router


def _apply_json(
    body: bytes, importer: ImportService, import_defaults: ImportDefaults
) -> JSONResponse:
    result = import_json_items(
        importer, _json_items(body), import_defaults, label="POST /appointments"
    )
    return _answer(result.summary, _item_errors(result.summary), rejected_all=result.rejected_all)


def _item_errors(summary: ImportSummary) -> list[ItemError]:
    return [ItemError(index=e.line, field=e.column, reason=e.reason) for e in summary.errors]


async def _csv_and_mapping(headers: Headers, body: bytes) -> tuple[bytes, bytes | None]:
    """The `file` and `mapping` parts of a multipart/form-data upload (already size-checked)."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=2, max_fields=10).parse()
    except (MultiPartException, ValueError) as exc:
        raise HTTPException(400, f"the multipart body cannot be read: {exc}") from None
    parts: dict[str, bytes] = {}
    for name in ("file", "mapping"):
        value = form.get(name)
        if isinstance(value, UploadFile):
            parts[name] = await value.read()
        elif isinstance(value, str):
            parts[name] = value.encode()
    await form.close()
    if "file" not in parts:
        raise HTTPException(422, "the multipart body has no part named 'file'")
    return parts["file"], parts.get("mapping")


def _apply_fhir(
    body: bytes, importer: ImportService, import_defaults: ImportDefaults
) -> JSONResponse:
    # The FHIR models are loaded by the first FHIR request (in its worker thread), not at every
    # start of `run` and `serve`, where most clinics, sending CSV or HL7, never use them.
    from ...services.fhir_import import apply_fhir  # noqa: PLC0415

    try:
        document = parse_json(body)
    except BadJson as exc:
        return _outcome(400, [_issue("error", "structure", "", str(exc))])
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


def _json_items(body: bytes) -> list[Any]:
    try:
        data = parse_json(body)
    except BadJson as exc:
        raise HTTPException(400, str(exc)) from None
    listed = data if isinstance(data, list) else [data]
    if len(listed) > MAX_BATCH:
        raise HTTPException(413, f"at most {MAX_BATCH} appointments a request")
    if not listed:
        raise HTTPException(422, "the list holds no appointments")
    return listed


def _answer(summary: ImportSummary, errors: list[ItemError], *, rejected_all: bool) -> JSONResponse:
    warnings = [ItemError(index=w.line, field=w.column, reason=w.reason) for w in summary.warnings]
    payload = ImportAnswer(summary=summary.counts(), errors=errors, warnings=warnings).model_dump()
    return JSONResponse(payload, status_code=422 if rejected_all else 200)


def _issue(severity: str, code: str, expression: str, diagnostics: str) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return issue


def _outcome(status: int, issues: list[dict[str, Any]]) -> JSONResponse:
    body = {"resourceType": "OperationOutcome", "issue": issues}
    return JSONResponse(body, status_code=status, media_type="application/fhir+json")
