"""What actors run against: settings, storage and the GitHub App of this process."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bot.github import GitHubApp, Installation
from builders.identity import BuildUser, hand_over, resolve_build_user
from core.errors import ConfigError, GitHubError
from core.settings import Settings
from storage import Storage, open_storage


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    github: GitHubApp | None
    build_user: BuildUser | None = None
    _npm_cache: Path | None = field(default=None, repr=False)
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        storage = open_storage(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
        github = GitHubApp(settings) if settings.github_configured else None
        build_user = resolve_build_user(settings.build_user)
        return cls(settings=settings, storage=storage, github=github, build_user=build_user)

    def installation(self, installation_id: int | None) -> Installation:
        if self.github is None:
            raise GitHubError("the GitHub App is not configured (GITHUB_APP_ID is not set)")
        if installation_id is None:
            raise GitHubError("the repository has no known installation of the App")
        return self.github.installation(installation_id)

    def npm_cache(self) -> Path:
        """npm's cache, shared by builds and owned by the build user."""
        with _cache_lock:
            if self._npm_cache is None:
                self._npm_cache = prepare_npm_cache(self.settings.cache_dir.resolve() / "npm", self.build_user)
            return self._npm_cache


_cache_lock = threading.Lock()


def prepare_npm_cache(wanted: Path, user: BuildUser | None) -> Path:
    """The shared npm cache, reachable and writable by the build user.

    When the build user cannot reach `wanted` (a parent folder closed to others, such as
    /root), a private folder of that user's in the system's temporary folder serves instead.
    """
    if user is not None and not _reachable_by_others(wanted.parent):
        digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
        wanted = Path(tempfile.gettempdir()) / f"dyonisus-npm-{user.uid}-{digest}"
    wanted.mkdir(parents=True, exist_ok=True, mode=0o700)
    if user is not None:
        status = wanted.lstat()
        if stat.S_ISLNK(status.st_mode) or status.st_uid not in (0, user.uid, os.geteuid()):
            raise ConfigError(f"the npm cache {wanted} belongs to someone else; remove it or set CACHE_DIR")
        hand_over(wanted, user)
    return wanted


def _reachable_by_others(folder: Path) -> bool:
    parts = [folder, *folder.parents]
    return all(part.stat().st_mode & stat.S_IXOTH for part in parts if part.exists())


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no runtime installed: call tasks.runtime.install() at start")
    return _current
