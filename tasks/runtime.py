"""What actors run against: settings, storage and the GitHub App of this process."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bot.github import GitHubApp, Installation
from core.errors import GitHubError
from core.settings import Settings
from storage import Storage, open_storage


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    github: GitHubApp | None
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        storage = open_storage(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
        github = GitHubApp(settings) if settings.github_configured else None
        return cls(settings=settings, storage=storage, github=github)

    def installation(self, installation_id: int | None) -> Installation:
        if self.github is None:
            raise GitHubError("the GitHub App is not configured (GITHUB_APP_ID is not set)")
        if installation_id is None:
            raise GitHubError("the repository has no known installation of the App")
        return self.github.installation(installation_id)

    @property
    def npm_cache(self) -> Path:
        return self.settings.cache_dir.resolve() / "npm"


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no runtime installed: call tasks.runtime.install() at start")
    return _current
