"""Routing deliveries off the request: the webhook answers at once, this actor acts on it."""

from __future__ import annotations

import logging
from datetime import timedelta

import dramatiq

from core.timeutil import utcnow
from models import WebhookDelivery
from tasks.broker import UNBOUND

log = logging.getLogger(__name__)
INTAKE_QUEUE = "intake"
MAX_ATTEMPTS = 5
STALE_SECONDS = 10


@dramatiq.actor(broker=UNBOUND, queue_name=INTAKE_QUEUE, max_retries=0)
def route_delivery(delivery_id: str) -> None:
    from bot.webhook import route_once

    try:
        route_once(delivery_id)
    except Exception:
        log.exception("routing delivery %s failed", delivery_id)
        _failed_attempt(delivery_id)


def _failed_attempt(delivery_id: str) -> None:
    row = WebhookDelivery.get_or_none(WebhookDelivery.delivery_id == delivery_id)
    if row is None:
        return
    attempts = row.attempts + 1
    state = "failed" if attempts >= MAX_ATTEMPTS else row.state
    WebhookDelivery.update(attempts=attempts, state=state).where(WebhookDelivery.delivery_id == delivery_id).execute()
    if state != "failed":
        route_delivery.send_with_options(args=(delivery_id,), delay=1000 * attempts)


def recover_deliveries(*, at_start: bool = False) -> int:
    """Send again the deliveries still waiting (at start: all of them; later: those waiting a while)."""
    waiting = WebhookDelivery.state == "received"
    if not at_start:
        waiting &= WebhookDelivery.received_at < utcnow() - timedelta(seconds=STALE_SECONDS)
    rows = WebhookDelivery.select(WebhookDelivery.delivery_id).where(waiting)
    count = 0
    for row in rows:
        route_delivery.send(row.delivery_id)
        count += 1
    return count
