"""What every builder gets and gives back, and how the builder for a source tree is chosen."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from builders.config import RepoConfig
from builders.log import BuildLog
from builders.runner import CommandRunner
from core.errors import BuildFailed

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class BuildContext:
    """One build: where the source is, where to work, how to run and log, when to stop."""

    deployment_id: str
    repository: str
    commit_sha: str
    source_dir: Path
    work_dir: Path
    config: RepoConfig
    log: BuildLog
    runner: CommandRunner
    env: dict[str, str]
    deadline: float
    should_stop: Callable[[], bool] = lambda: False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def project_dir(self) -> Path:
        """The configured root inside the source (the folder commands run in)."""
        return self.source_dir / self.config.root


@dataclass(frozen=True)
class BuildOutput:
    """A file to store as the artifact, and whatever the builder wants remembered."""

    artifact: Path | None
    provider_meta: dict[str, Any] = field(default_factory=dict)


class Builder(Protocol):
    name: str

    def build(self, context: BuildContext) -> BuildOutput: ...


def choose_builder(config: RepoConfig, project_dir: Path) -> str:
    """`docker` for a Dockerfile (or builder: docker), `static` otherwise."""
    if config.builder:
        return config.builder
    if (project_dir / config.dockerfile).is_file() and not _has_build_script(project_dir):
        return "docker"
    return "static"


def _has_build_script(project_dir: Path) -> bool:
    try:
        manifest = json.loads((project_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    scripts = manifest.get("scripts") if isinstance(manifest, dict) else None
    return isinstance(scripts, dict) and isinstance(scripts.get("build"), str)


def build_environment(home: Path, *, npm_cache: Path) -> dict[str, str]:
    """The minimal environment of a build: none of the service's own secrets."""
    return {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CI": "1",
        "TMPDIR": str(home / "tmp"),
        "npm_config_cache": str(npm_cache),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }


def require_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise BuildFailed(f"{what} {path.name!r} does not exist in the repository")
    return path
