"""Storing a received delivery: one INSERT, committed before the webhook answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import peewee

from models import WebhookDelivery, database

COLUMNS = ("delivery_id", "event", "action", "received_at", "state", "payload", "attempts")
_statements: dict[type[peewee.Database], str] = {}


def store(params: Sequence[Any]) -> bool:
    """Store one delivery (values in COLUMNS order); False when its id is stored already.

    A delivery that is stored as `failed` (its routing failed every attempt) is taken again:
    GitHub's redelivery keeps the X-GitHub-Delivery, and is the way to retry it.

    The INSERT is its own transaction. On SQLite, concurrent ones (other request threads, other
    web processes) wait in SQLite's busy handler: a lock of ours held around it would make them
    wait for a holder that is itself waiting for its interpreter lock."""
    return bool(database.execute_sql(_statement(), params).rowcount)


def _statement() -> str:
    """INSERT … ON CONFLICT, written out once per kind of database: building it with the query
    builder costs more than running it. The same text for SQLite and PostgreSQL but for the
    parameter marks. A conflict changes nothing, unless the stored row is `failed`: then the
    delivery starts over, as received."""
    kind = type(database.obj)
    statement = _statements.get(kind)
    if statement is None:
        fields = WebhookDelivery._meta.fields
        columns = ", ".join(f'"{fields[name].column_name}"' for name in COLUMNS)
        marks = ", ".join(database.obj.param for _ in COLUMNS)
        table = WebhookDelivery._meta.table_name
        again = ", ".join(
            f'"{fields[name].column_name}" = excluded."{fields[name].column_name}"'
            for name in COLUMNS
            if name != "delivery_id"
        )
        statement = (
            f'INSERT INTO "{table}" ({columns}) VALUES ({marks}) ON CONFLICT ("delivery_id") '
            f'DO UPDATE SET {again}, "result" = NULL WHERE "{table}"."state" = \'failed\''
        )
        _statements[kind] = statement
    return statement
