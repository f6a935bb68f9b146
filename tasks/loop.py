"""A background thread that does one step of work again and again until it is stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Loop:
    """Calls `step` every `interval` seconds; a step that returns True is called again at once."""

    def __init__(self, name: str, step: Callable[[], bool], *, interval: float) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dyonisus-{name}", daemon=True)

    def start(self) -> Loop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                more = self.step()
            except Exception:
                # A thread edge: the database or broker may be away for a moment; try again.
                log.exception("the %s loop failed", self.name)
                more = False
            if not more:
                self._stop.wait(self.interval)
