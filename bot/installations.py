"""`installation` events: remember which accounts installed the App."""

from __future__ import annotations

from bot.plan import identifier, mapping, text
from bot.projects import forget_installation, record_installation
from bot.router import Event, Outcome, Router

router = Router()


def _installation(event: Event) -> tuple[int, str] | None:
    installation = mapping(event.payload.get("installation"))
    installation_id = identifier(installation.get("id"))
    if installation_id is None:
        return None
    return installation_id, text(mapping(installation.get("account")).get("login")) or ""


@router.register("installation", action="created")
@router.register("installation", action="unsuspend")
def installation_created(event: Event) -> Outcome:
    found = _installation(event)
    if found:
        record_installation(*found)
    return Outcome(notes=["installation recorded"])


@router.register("installation", action="suspend")
def installation_suspended(event: Event) -> Outcome:
    found = _installation(event)
    if found:
        record_installation(*found, suspended=True)
    return Outcome(notes=["installation suspended"])


@router.register("installation", action="deleted")
def installation_deleted(event: Event) -> Outcome:
    found = _installation(event)
    if found:
        forget_installation(found[0])
    return Outcome(notes=["installation removed"])
