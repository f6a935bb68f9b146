"""A background thread that re-sends deployments no live job holds."""

from __future__ import annotations

import logging
import threading

from tasks.commands import recover_commands
from tasks.deploy import recover_deployments

log = logging.getLogger(__name__)
SWEEP_SECONDS = 15.0


class Sweeper:
    def __init__(self, *, interval: float = SWEEP_SECONDS) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dyonisus-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sent = recover_deployments(at_start=False) + recover_commands()
            except Exception:
                log.exception("the deployment sweep failed")
                continue
            if sent:
                log.warning("sent %d deployment(s) that no job held", sent)
