"""The one place build commands run: argument lists, own process group, time limit, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from builders.identity import BuildUser
from builders.log import BuildLog
from core.errors import BuildCancelled, BuildFailed, BuildTimedOut

POLL_SECONDS = 0.2
TERM_GRACE_SECONDS = 5.0


class CommandRunner:
    """Runs a command with its output streamed, line by line, into a build log."""

    def __init__(self, *, user: BuildUser | None = None) -> None:
        self.user = user

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: BuildLog,
        deadline: float,
        should_stop: Callable[[], bool] = lambda: False,
        timeout_reason: str = "the build ran over its time limit",
    ) -> int:
        """Run argv to completion and return its exit code.

        Raises BuildTimedOut past `deadline` (a time.monotonic() value) and BuildCancelled
        when should_stop() turns true; either way the whole process group is stopped.
        """
        log.step("$ " + " ".join(argv))
        try:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user.uid if self.user else None,
                group=self.user.gid if self.user else None,
                extra_groups=[] if self.user else None,
            )
        except FileNotFoundError:
            raise BuildFailed(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise BuildFailed(f"command cannot be run (permission denied): {argv[0]}") from None
        except OSError as error:
            # Not a program (ENOEXEC), arguments over the system's limit (E2BIG), …
            raise BuildFailed(f"command cannot be run ({error.strerror}): {argv[0][:200]}") from None
        except ValueError as error:
            # A NUL byte in an argument.
            raise BuildFailed(f"command cannot be run ({error}): {argv[0][:200]!r}") from None
        reader = threading.Thread(target=_copy_lines, args=(process, log), daemon=True)
        reader.start()
        try:
            code = _wait(process, deadline=deadline, should_stop=should_stop)
        except BuildTimedOut:
            log.step(f"stopped: {timeout_reason}")
            raise BuildTimedOut(timeout_reason) from None
        except BuildCancelled:
            log.step("stopped: the deployment was cancelled")
            raise
        finally:
            # Nothing the command started may outlive it.
            _kill_group(process)
            reader.join(timeout=TERM_GRACE_SECONDS)
            if process.stdout is not None:
                process.stdout.close()
        log.step(f"exit code {code}")
        return code


def _copy_lines(process: subprocess.Popen[bytes], log: BuildLog) -> None:
    assert process.stdout is not None
    for raw in process.stdout:
        log.line(raw.decode("utf-8", errors="replace"))


def _wait(process: subprocess.Popen[bytes], *, deadline: float, should_stop: Callable[[], bool]) -> int:
    while True:
        try:
            return process.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            _stop_group(process)
            raise BuildTimedOut("time limit")
        if should_stop():
            _stop_group(process)
            raise BuildCancelled("cancelled")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after a grace period."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=TERM_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(process)
    process.wait()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
