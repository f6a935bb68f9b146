"""The webhook receiver: verify the signature, store the delivery, answer; routing it comes after."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

import orjson
import peewee
from flask import Blueprint, Response, current_app, request
from githubkit.webhooks import verify

from bot import checks, deliveries, installations, issue_comment, pull_request, push
from bot.router import Event, Outcome, Router
from core.settings import Settings
from core.timeutil import utcnow
from models import WebhookDelivery, database

log = logging.getLogger(__name__)
blueprint = Blueprint("webhooks", __name__)
ROUTER = Router(push.router, pull_request.router, issue_comment.router, checks.router, installations.router)
# https://docs.github.com/en/webhooks/webhook-events-and-payloads: payloads are capped at 25 MB.
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024


def _answer(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return Response(orjson.dumps({"message": message, **extra}), mimetype="application/json"), status


@blueprint.post("/api/github/webhooks")
def receive_webhook() -> tuple[Response, int]:
    settings: Settings = current_app.config["SETTINGS"]
    if not settings.github_webhook_secret:
        return _answer(503, "the GitHub App is not registered yet; open the service's home page")
    headers = request.headers
    body = request.get_data(cache=False)
    signature = headers.get("X-Hub-Signature-256", "")
    if not signature:
        return _answer(401, "missing X-Hub-Signature-256 (the SHA-1 X-Hub-Signature is not accepted)")
    # hmac.compare_digest refuses non-ASCII text with a TypeError; such a header never matches.
    if (
        not signature.startswith("sha256=")
        or not signature.isascii()
        or not verify(settings.github_webhook_secret, body, signature)
    ):
        return _answer(401, "signature does not match")
    name = headers.get("X-GitHub-Event", "")
    delivery_id = headers.get("X-GitHub-Delivery", "")
    if not name or not delivery_id or len(delivery_id) > 100:
        return _answer(400, "missing X-GitHub-Event or X-GitHub-Delivery header")
    parsed = _payload(body, headers.get("Content-Type", ""))
    if parsed is None:
        return _answer(400, "the body is not a JSON object")
    payload, text = parsed
    if name == "ping":
        return _answer(200, "pong", zen=payload.get("zen"))
    event = Event(name=name, delivery_id=delivery_id, payload=payload)
    if not ROUTER.handles(event):
        return _answer(202, f"ignored: the service does not act on {name}.{event.action or ''}".rstrip("."))
    return _record(event, text)


def _payload(body: bytes, content_type: str) -> tuple[dict[str, Any], str] | None:
    """The payload and its JSON text, or None when the body is not a JSON object."""
    try:
        text = body.decode("utf-8")
        if content_type.startswith("application/x-www-form-urlencoded"):
            text = parse_qs(text).get("payload", [""])[0]
        data = parse_json(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return (data, text) if isinstance(data, dict) else None


def parse_json(text: str) -> Any:
    """JSON text as Python values; ValueError when it is not JSON.

    Text that no database or HTTP body can carry, a lone surrogate (`\\ud83d`) or a NUL
    (`\\u0000`, which PostgreSQL refuses), becomes U+FFFD. orjson refuses lone surrogate escapes,
    and the standard parser reads those. (orjson reads integers beyond 64 bits as floats, which no
    field of a delivery takes.)"""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(text)
        except RecursionError:
            # JSON nested deeper than the parser's stack.
            raise ValueError("JSON nested too deep") from None
    if "\\u" in text and _UNSTORABLE_ESCAPE.search(text):
        data = _storable(data)
    return data


_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def _storable(data: Any) -> Any:
    """data with every string made storable, walked without recursion (it may be deep)."""
    root = [data]
    pending: list[list[Any] | dict[Any, Any]] = [root]
    while pending:
        container = pending.pop()
        if isinstance(container, dict) and any(isinstance(key, str) and _unstorable(key) for key in container):
            items = list(container.items())
            container.clear()
            container.update((_storable_text(key), value) for key, value in items)
        keys = range(len(container)) if isinstance(container, list) else list(container)
        for key in keys:
            value = container[key]
            if isinstance(value, str):
                if _unstorable(value):
                    container[key] = _storable_text(value)
            elif isinstance(value, list | dict):
                pending.append(value)
    return root[0]


def _unstorable(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _storable_text(text: str) -> str:
    text = text.replace("\x00", "\ufffd")
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _stored_action(action: str | None) -> str | None:
    """The action for its column, when it looks like one of GitHub's (routing reads the payload)."""
    return action if action is not None and _ACTION.fullmatch(action) else None


_ACTION = re.compile(r"[a-z_]{1,64}")


def _record(event: Event, text: str) -> tuple[Response, int]:
    """Store the delivery for the intake poller (tasks.intake), and nothing else."""
    received_at = WebhookDelivery.received_at.db_value(utcnow())
    try:
        inserted = deliveries.store(
            (event.delivery_id, event.name, _stored_action(event.action), received_at, "received", text, 0)
        )
    except peewee.DatabaseError as error:
        # GitHub shows the delivery as failed, and it can be redelivered.
        log.exception("storing delivery %s failed", event.delivery_id)
        return _answer(503, f"the delivery could not be stored: {error}")
    if not inserted:
        return _answer(200, "duplicate delivery: already received", duplicate=True)
    return _answer(202, "accepted", delivery=event.delivery_id)


def route(delivery_id: str) -> Outcome | None:
    """Turn a stored delivery into deployments and jobs, once; None when it was routed already."""
    with database.atomic() as transaction:
        row = WebhookDelivery.get_or_none(
            (WebhookDelivery.delivery_id == delivery_id) & (WebhookDelivery.state == "received")
        )
        if row is None:
            return None
        event = Event(name=row.event, delivery_id=delivery_id, payload=parse_json(row.payload or "{}"))
        outcome = ROUTER.dispatch(event)
        result = {"deployments": outcome.builds + outcome.recorded, "notes": outcome.notes}
        claimed = (
            WebhookDelivery.update(state="routed", result=result, payload=None)
            .where((WebhookDelivery.delivery_id == delivery_id) & (WebhookDelivery.state == "received"))
            .execute()
        )
        if not claimed:
            # Another process routed it meanwhile: undo ours.
            transaction.rollback()
            return None
    _enqueue(outcome)
    return outcome


def _enqueue(outcome: Outcome) -> None:
    from tasks.deploy import enqueue_build

    for deployment_id in outcome.builds:
        try:
            enqueue_build(deployment_id)
        except Exception:
            log.exception("could not enqueue deployment %s; it will be sent again", deployment_id)
    for actor, args in outcome.jobs:
        try:
            actor.send(*args)
        except Exception:
            log.exception("could not enqueue %s%r", actor, args)
