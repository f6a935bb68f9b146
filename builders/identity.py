"""The user builds run as: never the service's own, so a build cannot read its keys or database."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

DEFAULT_BUILD_USER = "nobody"
SAME_USER = "self"


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int


def resolve_build_user(setting: str | None) -> BuildUser | None:
    """BUILD_USER as a user; None means builds run as the service's own user.

    Unset: `nobody` when the service runs as root (it can switch users), else the service's
    user. `self` asks for the service's user explicitly.
    """
    if setting == SAME_USER:
        return None
    if not setting:
        if os.geteuid() != 0:
            return None
        setting = DEFAULT_BUILD_USER
    try:
        entry = pwd.getpwnam(setting)
    except KeyError:
        raise ConfigError(f"BUILD_USER names no user of this machine: {setting!r}") from None
    if entry.pw_uid == 0:
        raise ConfigError("BUILD_USER must not be root: builds would read the service's keys")
    if os.geteuid() not in (0, entry.pw_uid):
        raise ConfigError(
            f"BUILD_USER={setting} needs the service to run as root (or as {setting}); or set BUILD_USER=self"
        )
    if entry.pw_uid == os.geteuid():
        return None
    return BuildUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def hand_over(folder: Path, user: BuildUser | None) -> None:
    """Make a folder and everything in it the build user's (links themselves, not their targets)."""
    if user is None:
        return
    os.lchown(folder, user.uid, user.gid)
    for root, directories, files in os.walk(folder):
        for name in directories + files:
            os.lchown(os.path.join(root, name), user.uid, user.gid)
