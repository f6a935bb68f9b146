"""The webhook receiver: verify the signature, store the delivery, answer; routing it comes after."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qs

import peewee
from flask import Blueprint, Response, current_app, jsonify, request
from githubkit.webhooks import verify

from bot import checks, installations, issue_comment, pull_request, push
from bot.router import Event, Outcome, Router
from core.settings import Settings
from core.timeutil import utcnow
from models import WebhookDelivery, database

log = logging.getLogger(__name__)
blueprint = Blueprint("webhooks", __name__)
ROUTER = Router(push.router, pull_request.router, issue_comment.router, checks.router, installations.router)
# https://docs.github.com/en/webhooks/webhook-events-and-payloads: payloads are capped at 25 MB.
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024
_SQLITE_WRITER = threading.Lock()


def _answer(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"message": message, **extra}), status


@blueprint.post("/api/github/webhooks")
def receive_webhook() -> tuple[Response, int]:
    settings: Settings = current_app.config["SETTINGS"]
    if not settings.github_webhook_secret:
        return _answer(503, "the GitHub App is not registered yet; open the service's home page")
    body = request.get_data(cache=False)
    signature = request.headers.get("X-Hub-Signature-256", "")
    if not signature:
        return _answer(401, "missing X-Hub-Signature-256 (the SHA-1 X-Hub-Signature is not accepted)")
    # hmac.compare_digest refuses non-ASCII text with a TypeError; such a header never matches.
    if (
        not signature.startswith("sha256=")
        or not signature.isascii()
        or not verify(settings.github_webhook_secret, body, signature)
    ):
        return _answer(401, "signature does not match")
    name = request.headers.get("X-GitHub-Event", "")
    delivery_id = request.headers.get("X-GitHub-Delivery", "")
    if not name or not delivery_id or len(delivery_id) > 100:
        return _answer(400, "missing X-GitHub-Event or X-GitHub-Delivery header")
    parsed = _payload(body, request.content_type or "")
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
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's stack.
        return None
    return (data, text) if isinstance(data, dict) else None


_INSERT_COLUMNS = ("delivery_id", "event", "action", "received_at", "state", "payload", "attempts")


def _record(event: Event, text: str) -> tuple[Response, int]:
    """Store the delivery for the intake poller (tasks.intake): one INSERT, nothing else."""
    values = {
        "delivery_id": event.delivery_id,
        "event": event.name,
        "action": event.action,
        "received_at": utcnow(),
        "state": "received",
        "payload": text,
        "attempts": 0,
    }
    fields = WebhookDelivery._meta.fields
    params = [fields[name].db_value(values[name]) for name in _INSERT_COLUMNS]
    with _one_writer():
        # The statement is written out: building it with the query builder costs more than running it.
        cursor = database.execute_sql(_insert_sql(), params)
    if not cursor.rowcount:
        return _answer(200, "duplicate delivery: already received", duplicate=True)
    return _answer(202, "accepted", delivery=event.delivery_id)


def _insert_sql() -> str:
    """INSERT ... ON CONFLICT DO NOTHING: the same text for SQLite and PostgreSQL, but for the marks."""
    columns = ", ".join(f'"{column}"' for column in _INSERT_COLUMNS)
    marks = ", ".join(database.obj.param for _ in _INSERT_COLUMNS)
    table = WebhookDelivery._meta.table_name
    return f'INSERT INTO "{table}" ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING'


def _one_writer() -> threading.Lock | contextlib.nullcontext[None]:
    """SQLite admits one writer at a time and makes the others sleep in its busy handler, in steps
    that grow to 100 ms; this process's request threads queue on a lock instead."""
    return _SQLITE_WRITER if isinstance(database.obj, peewee.SqliteDatabase) else contextlib.nullcontext()


def route(delivery_id: str) -> Outcome | None:
    """Turn a stored delivery into deployments and jobs, once; None when it was routed already."""
    with database.atomic() as transaction:
        row = WebhookDelivery.get_or_none(
            (WebhookDelivery.delivery_id == delivery_id) & (WebhookDelivery.state == "received")
        )
        if row is None:
            return None
        event = Event(name=row.event, delivery_id=delivery_id, payload=json.loads(row.payload or "{}"))
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
