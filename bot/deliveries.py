"""Storing a received delivery: one INSERT, committed before the webhook answers."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import peewee

from models import WebhookDelivery, database

COLUMNS = ("delivery_id", "event", "action", "received_at", "state", "payload", "attempts")
_statements: dict[type[peewee.Database], str] = {}
_lock_files: dict[tuple[int, str], int] = {}
_process_writer = threading.Lock()


def store(params: Sequence[Any]) -> bool:
    """Store one delivery (values in COLUMNS order); False when its id is stored already."""
    with _one_writer():
        return bool(database.execute_sql(_statement(), params).rowcount)


def _statement() -> str:
    """INSERT … ON CONFLICT DO NOTHING, written out once per kind of database: building it with
    the query builder costs more than running it. The same text for SQLite and PostgreSQL but for
    the parameter marks."""
    kind = type(database.obj)
    statement = _statements.get(kind)
    if statement is None:
        columns = ", ".join(f'"{WebhookDelivery._meta.fields[name].column_name}"' for name in COLUMNS)
        marks = ", ".join(database.obj.param for _ in COLUMNS)
        table = WebhookDelivery._meta.table_name
        statement = f'INSERT INTO "{table}" ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING'
        _statements[kind] = statement
    return statement


@contextmanager
def _one_writer() -> Iterator[None]:
    """On SQLite, one INSERT at a time, across the web processes too.

    SQLite admits one writer and makes the others poll, sleeping 1 ms and more between tries.
    Waiting here instead, on this process's lock and then on a lock file beside the database,
    the next writer goes as soon as the last one has committed."""
    db = database.obj
    if not isinstance(db, peewee.SqliteDatabase):
        yield
        return
    with _process_writer:
        lock_file = _lock_file(db.database)
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _lock_file(path: str) -> int:
    """The descriptor of `<database>-intake.lock`, opened once per process: a descriptor that a
    forked process inherited would share its parent's lock instead of waiting for it."""
    key = (os.getpid(), path)
    descriptor = _lock_files.get(key)
    if descriptor is None:
        descriptor = _lock_files[key] = os.open(f"{path}-intake.lock", os.O_RDWR | os.O_CREAT, 0o600)
    return descriptor
