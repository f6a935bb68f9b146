"""Bring a process up: database, schema, storage, GitHub App, broker and actors."""

from __future__ import annotations

import dramatiq

import models
from core.settings import Settings
from tasks.broker import setup_broker
from tasks.runtime import Runtime, install


def bootstrap(settings: Settings) -> dramatiq.Broker:
    models.connect(settings.database_url)
    models.create_schema()
    runtime = Runtime.from_settings(settings)
    runtime.storage.check()
    install(runtime)
    return setup_broker(settings)
