"""The build log: every line timestamped, written as it happens, kept in one file."""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

SERVICE_PREFIX = "==> "
MIN_REDACTED_PART = 16


class BuildLog:
    """An append-only log file; safe to write from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: TextIO = path.open("a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()
        self._redactions: list[str] = []

    def redact(self, *values: str) -> None:
        """Never write these values (tokens, keys) to the log.

        The log is written a line at a time, so a multi-line value (a PEM key) is also
        redacted line by line; its lines too short to say anything are left alone.
        """
        for value in values:
            if not value:
                continue
            self._redactions.append(value)
            parts = (part.strip() for part in value.splitlines())
            self._redactions.extend(part for part in parts if len(part) >= MIN_REDACTED_PART and part != value)

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
