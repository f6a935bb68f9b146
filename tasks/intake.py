"""Routing stored deliveries off the request: the webhook only stores them, this poller acts on them.

The delivery table is the queue (an outbox): the webhook writes one row and answers; a poller
thread in every process that runs workers routes each row once. A restart or a broker outage
loses nothing, and routing never waits behind a running build.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import peewee

from core.timeutil import utcnow
from models import WebhookDelivery
from tasks.loop import Loop

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
POLL_SECONDS = 0.05
BATCH = 50
# GitHub redelivers deliveries up to 3 days old (7 on GitHub Enterprise Server); a routed
# delivery's id is kept a day beyond that, to answer a redelivery as a duplicate.
KEEP_ROUTED = timedelta(days=8)
PRUNE_BATCH = 500
PRUNE_BATCHES = 20


def route_waiting(*, limit: int = BATCH) -> int:
    """Route the deliveries that wait, oldest first; returns how many were looked at."""
    from bot.webhook import route

    rows = list(waiting_query(limit))
    for row in rows:
        try:
            route(row.delivery_id)
        except Exception as error:
            log.exception("routing delivery %s failed", row.delivery_id)
            _failed_attempt(row.delivery_id, error)
    return len(rows)


def waiting_query(limit: int = BATCH) -> peewee.ModelSelect[WebhookDelivery]:
    """The oldest deliveries that wait to be routed (read through the (state, received_at) index)."""
    return (
        WebhookDelivery.select(WebhookDelivery.delivery_id)
        .where(WebhookDelivery.state == "received")
        .order_by(WebhookDelivery.received_at)
        .limit(limit)
    )


def prune_deliveries(*, now: datetime | None = None, batches: int = PRUNE_BATCHES) -> int:
    """Forget routed deliveries received more than KEEP_ROUTED ago; returns how many.

    A routed row keeps only the delivery id (its payload is dropped once routed), which is what
    tells a redelivery from a new delivery; past GitHub's redelivery window nothing needs it.
    Rows still waiting, and those that failed to route, stay. Deleted a batch at a time, so that
    no transaction holds SQLite's write lock for long."""
    cutoff = (now or utcnow()) - KEEP_ROUTED
    pruned = 0
    for _ in range(batches):
        old = (
            WebhookDelivery.select(WebhookDelivery.delivery_id)
            .where((WebhookDelivery.state == "routed") & (WebhookDelivery.received_at < cutoff))
            .order_by(WebhookDelivery.received_at)
            .limit(PRUNE_BATCH)
        )
        deleted = WebhookDelivery.delete().where(WebhookDelivery.delivery_id.in_(old)).execute()
        pruned += deleted
        if deleted < PRUNE_BATCH:
            break
    return pruned


def failed_deliveries(limit: int = 20) -> list[WebhookDelivery]:
    """Deliveries that could not be routed, newest first, for the home page."""
    return list(
        WebhookDelivery.select(
            WebhookDelivery.delivery_id,
            WebhookDelivery.event,
            WebhookDelivery.action,
            WebhookDelivery.received_at,
            WebhookDelivery.attempts,
            WebhookDelivery.result,
        )
        .where(WebhookDelivery.state == "failed")
        .order_by(WebhookDelivery.received_at.desc())
        .limit(limit)
    )


def _failed_attempt(delivery_id: str, error: Exception) -> None:
    """Count a failed attempt and keep its reason; after MAX_ATTEMPTS the delivery is `failed`
    (its payload kept), which the home page lists and a redelivery from GitHub starts over."""
    row = WebhookDelivery.get_or_none(WebhookDelivery.delivery_id == delivery_id)
    if row is None:
        return
    attempts = row.attempts + 1
    state = "failed" if attempts >= MAX_ATTEMPTS else row.state
    reason = f"{type(error).__name__}: {error}"[:1000]
    WebhookDelivery.update(attempts=attempts, state=state, result={"error": reason}).where(
        WebhookDelivery.delivery_id == delivery_id
    ).execute()


def intake_loop() -> Loop:
    """The thread that routes waiting deliveries as they arrive."""
    return Loop("intake", lambda: route_waiting() == BATCH, interval=POLL_SECONDS)
