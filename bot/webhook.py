"""The webhook receiver: verify the signature, record the delivery, enqueue, answer."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, jsonify, request
from githubkit.webhooks import verify

from bot import checks, installations, issue_comment, pull_request, push
from bot.router import Event, Outcome, Router
from core.settings import Settings
from models import WebhookDelivery, database

log = logging.getLogger(__name__)
blueprint = Blueprint("webhooks", __name__)
ROUTER = Router(push.router, pull_request.router, issue_comment.router, checks.router, installations.router)
# https://docs.github.com/en/webhooks/webhook-events-and-payloads: payloads are capped at 25 MB.
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024


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
    payload = _payload(body, request.content_type or "")
    if payload is None:
        return _answer(400, "the body is not a JSON object")
    if name == "ping":
        return _answer(200, "pong", zen=payload.get("zen"))
    event = Event(name=name, delivery_id=delivery_id, payload=payload)
    if not ROUTER.handles(event):
        return _answer(202, f"ignored: the service does not act on {name}.{event.action or ''}".rstrip("."))
    return _handle(event)


def _payload(body: bytes, content_type: str) -> dict[str, Any] | None:
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            body = parse_qs(body.decode("utf-8")).get("payload", [""])[0].encode()
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's stack.
        return None
    return data if isinstance(data, dict) else None


def _handle(event: Event) -> tuple[Response, int]:
    with database.atomic():
        inserted = (
            WebhookDelivery.insert(delivery_id=event.delivery_id, event=event.name, action=event.action)
            .on_conflict_ignore()
            .as_rowcount()
            .execute()
        )
        if not inserted:
            return _answer(200, "duplicate delivery: already handled", duplicate=True)
        outcome = ROUTER.dispatch(event)
    _enqueue(outcome)
    return _answer(202, "; ".join(outcome.notes) or "accepted", deployments=outcome.builds + outcome.recorded)


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
