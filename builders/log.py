"""The build log: every line timestamped, written as it happens, kept in one file."""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

SERVICE_PREFIX = "==> "


class BuildLog:
    """An append-only log file; safe to write from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: TextIO = path.open("a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()
        self._redactions: list[str] = []

    def redact(self, *values: str) -> None:
        """Never write these values (tokens, keys) to the log."""
        self._redactions.extend(value for value in values if value)

    def line(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        for value in self._redactions:
            text = text.replace(value, "***")
        with self._lock:
            self._handle.write(f"{stamp} {text.rstrip()}\n")
            self._handle.flush()

    def step(self, text: str) -> None:
        """A line written by the service itself, not by the build."""
        self.line(SERVICE_PREFIX + text)

    def close(self) -> None:
        with self._lock:
            self._handle.close()

    def tail(self, count: int) -> list[str]:
        return read_tail(self.path, count)


def read_tail(path: Path, count: int) -> list[str]:
    """The last `count` lines of a log file, without their newlines."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=count)]
