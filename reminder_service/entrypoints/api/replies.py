"""Replies and confirmations for the clinic's staff: list the replies patients texted, mark one
handled, confirm an appointment for a patient (after a call). Every route needs an API key; the
key's name is recorded as who did it."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from ...services.confirmations import AlreadyCancelled, Confirmations
from ...services.previewing import NotFound
from ...services.reply_inbox import MAX_ID, MAX_LIST, ReplyInbox
from .keys import caller


def build_replies_router(
    inbox: ReplyInbox,
    confirmations: Confirmations,
    api_key: Callable[..., str],
    *,
    clinics: Collection[str],
) -> APIRouter:
    router = APIRouter(dependencies=[Depends(api_key)])

    @router.get("/replies")
    def list_replies(
        unhandled: Annotated[bool, Query(description="Only those waiting for a person")] = False,
        clinic: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    ) -> dict[str, Any]:
        """Replies patients texted, newest first: number, text, what it was read as, the answer
        sent, the appointment and patient it was linked to, and who handled it when."""
        if clinic is not None and clinic not in clinics:
            raise HTTPException(422, f"clinic {clinic!r} is not configured")
        found = inbox.list(unhandled=unhandled, clinic=clinic, limit=limit)
        return {"replies": [reply.as_json() for reply in found]}

    @router.post("/replies/{reply_id}/handled")
    def mark_handled(
        request: Request, reply_id: Annotated[int, Path(ge=1, le=MAX_ID)]
    ) -> dict[str, Any]:
        """Mark a reply handled by this API key's name. A reply handled already keeps its first
        handler (`already_handled` says so)."""
        try:
            reply, marked = inbox.mark_handled(reply_id, caller(request))
        except NotFound:
            raise HTTPException(404, "no such reply") from None
        return {**reply.as_json(), "already_handled": not marked}

    @router.post("/appointments/{appointment_id}/confirm")
    def confirm(request: Request, appointment_id: str) -> dict[str, Any]:
        """Record that the patient confirmed (by phone, say), by this API key's name."""
        try:
            state = confirmations.confirm(appointment_id, caller(request))
        except NotFound:
            raise HTTPException(404, "no such appointment") from None
        except AlreadyCancelled:
            raise HTTPException(409, "the appointment is cancelled") from None
        return {"appointment_id": appointment_id, **state.as_json()}

    return router
