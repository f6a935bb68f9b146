"""Entry point of worker processes: `dramatiq tasks.worker` (used when REDIS_URL is set)."""

from __future__ import annotations

import logging
import sys

from core.errors import ConfigError
from core.settings import Settings
from tasks.bootstrap import bootstrap
from tasks.checkpoint import checkpoint_loop
from tasks.deploy import recover_deployments
from tasks.intake import intake_loop
from tasks.sweeper import sweeper_loop

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

try:
    _settings = Settings.from_env()
except ConfigError as _error:
    print(f"dyonisus worker: configuration error: {_error}", file=sys.stderr)
    raise SystemExit(2) from None

broker = bootstrap(_settings)
recover_deployments(at_start=True)
intake = intake_loop().start()
sweeper = sweeper_loop().start()
checkpoint = checkpoint_loop()
if checkpoint:
    checkpoint.start()
