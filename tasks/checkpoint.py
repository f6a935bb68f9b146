"""A background thread that checkpoints the SQLite write-ahead log, so that commits need not."""

from __future__ import annotations

import peewee

from models import checkpoint_wal, database
from tasks.loop import Loop

CHECKPOINT_SECONDS = 1.0


def checkpoint_loop() -> Loop | None:
    """The checkpointing thread, not started; None when the database is not SQLite."""
    if not isinstance(database.obj, peewee.SqliteDatabase):
        return None
    return Loop("checkpoint", _step, interval=CHECKPOINT_SECONDS)


def _step() -> bool:
    checkpoint_wal()
    return False
