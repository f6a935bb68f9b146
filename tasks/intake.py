"""Routing stored deliveries off the request: the webhook only stores them, this poller acts on them.

The delivery table is the queue (an outbox): the webhook writes one row and answers; a poller
thread in every process that runs workers routes each row once. A restart or a broker outage
loses nothing, and routing never waits behind a running build.
"""

from __future__ import annotations

import logging

from models import WebhookDelivery
from tasks.loop import Loop

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
POLL_SECONDS = 0.05
BATCH = 50


def route_waiting(*, limit: int = BATCH) -> int:
    """Route the deliveries that wait, oldest first; returns how many were looked at."""
    from bot.webhook import route

    rows = list(
        WebhookDelivery.select(WebhookDelivery.delivery_id)
        .where(WebhookDelivery.state == "received")
        .order_by(WebhookDelivery.received_at)
        .limit(limit)
    )
    for row in rows:
        try:
            route(row.delivery_id)
        except Exception:
            log.exception("routing delivery %s failed", row.delivery_id)
            _failed_attempt(row.delivery_id)
    return len(rows)


def _failed_attempt(delivery_id: str) -> None:
    row = WebhookDelivery.get_or_none(WebhookDelivery.delivery_id == delivery_id)
    if row is None:
        return
    attempts = row.attempts + 1
    state = "failed" if attempts >= MAX_ATTEMPTS else row.state
    WebhookDelivery.update(attempts=attempts, state=state).where(WebhookDelivery.delivery_id == delivery_id).execute()


def intake_loop() -> Loop:
    """The thread that routes waiting deliveries as they arrive."""
    return Loop("intake", lambda: route_waiting() == BATCH, interval=POLL_SECONDS)
