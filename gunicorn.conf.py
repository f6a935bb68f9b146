"""gunicorn settings of the web process (Procfile: `gunicorn --config gunicorn.conf.py …`)."""

from __future__ import annotations

import gc
import os
from typing import Any

# Each worker touches a heartbeat file all the time; on a disk-backed folder that call can wait
# behind the file system's journal for a good fraction of a second, and the worker with it.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"


def post_worker_init(worker: Any) -> None:
    """Move the loaded app (some 90,000 objects, mostly GitHub's API schemas) out of the garbage
    collector's sight: a full collection over them takes about 45 ms, long enough to show in
    webhook answer times. Objects made afterwards are collected as usual."""
    gc.collect()
    gc.freeze()


def on_starting(server: Any) -> None:
    """Check the settings and the database once, in the master, before any worker loads the app:
    a bad one stops gunicorn with the readable message `python app.py` gives, not a traceback
    from each worker."""
    import models
    from core.errors import ConfigError
    from core.settings import Settings, database_problem

    try:
        settings = Settings.from_env()
    except ConfigError as error:
        server.log.error("dyonisus: configuration error: %s", error)
        raise SystemExit(2) from None
    try:
        models.check_reachable(settings.database_url)
    except models.DATABASE_ERRORS as error:
        server.log.error("%s", database_problem(settings, error))
        raise SystemExit(2) from None
