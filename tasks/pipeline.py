"""One deployment from claim to report: fetch the source, build, store, tell GitHub."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from peewee import Expression, fn

from bot import report as reporting
from bot.github import Installation
from bot.plan import paths_match, skip_marker
from builders.base import BuildContext, Builder, BuildOutput, build_environment, choose_builder
from builders.config import CONFIG_FILE_NAMES, RepoConfig, parse_config
from builders.docker import DockerBuilder
from builders.identity import hand_over
from builders.log import BuildLog
from builders.runner import CommandRunner
from builders.static import StaticBuilder
from builders.unpack import unpack_source
from core.errors import BuildFailed, BuildSkipped, ConfigError, GitHubError, InfrastructureError
from core.settings import Settings
from core.timeutil import utcnow
from models import Deployment, DeploymentStatus, database, lease_expiry
from tasks.runtime import Runtime
from web.urls import details_url, preview_url

log = logging.getLogger(__name__)

LEASE_SECONDS = 60
HEARTBEAT_SECONDS = 2.0
MAX_ATTEMPTS = 4
BACKOFF_SECONDS = (2, 10, 30)


def artifact_key(deployment_id: str) -> str:
    return f"deployments/{deployment_id}/artifact.tar.gz"


def logs_key(deployment_id: str) -> str:
    return f"deployments/{deployment_id}/build.log"


def claim(deployment_id: str, worker_id: str) -> Deployment | None:
    """Take the deployment for this worker; None when it is finished or held elsewhere."""
    now = utcnow()
    claimable = (Deployment.status == DeploymentStatus.PENDING.value) | (
        (Deployment.status == DeploymentStatus.BUILDING.value) & (Deployment.lease_until < now)
    )
    updated = (
        Deployment.update(
            status=DeploymentStatus.BUILDING.value,
            started_at=fn.COALESCE(Deployment.started_at, now),
            lease_until=lease_expiry(LEASE_SECONDS),
            worker_id=worker_id,
            attempts=Deployment.attempts + 1,
        )
        .where((Deployment.id == deployment_id) & claimable)
        .execute()
    )
    if not updated:
        return None
    return Deployment.get_by_id(deployment_id)


def _holds(deployment_id: str, worker_id: str) -> Expression:
    return (Deployment.id == deployment_id) & (Deployment.worker_id == worker_id)


class Heartbeat:
    """Keeps the lease while a build runs, and notices a cancellation request."""

    def __init__(self, deployment_id: str, worker_id: str) -> None:
        self.deployment_id = deployment_id
        self.worker_id = worker_id
        self.cancelled = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{deployment_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._done.wait(HEARTBEAT_SECONDS):
                try:
                    Deployment.update(lease_until=lease_expiry(LEASE_SECONDS)).where(
                        _holds(self.deployment_id, self.worker_id)
                    ).execute()
                    row = (
                        Deployment.select(Deployment.cancel_requested)
                        .where(Deployment.id == self.deployment_id)
                        .first()
                    )
                    if row is None or row.cancel_requested:
                        self.cancelled.set()
                except Exception:
                    log.exception("heartbeat of %s failed", self.deployment_id)
        finally:
            database.close()  # the thread ends: its connection goes back now, not when the pool notices


def base_report(runtime: Runtime, deployment: Deployment) -> reporting.Report:
    return reporting.Report(
        repo=deployment.project.full_name,
        deployment_id=deployment.id,
        sha=deployment.commit_sha,
        details_url=details_url(runtime.settings, deployment.id),
        preview_url=preview_url(runtime.settings, deployment.id),
        outcome=None,
    )


def report_started(runtime: Runtime, github: Installation, deployment: Deployment, log: BuildLog) -> None:
    report = base_report(runtime, deployment)
    reporting.send_status(github, report)
    check_run_id = reporting.send_check_run(github, report, deployment.check_run_id)
    if check_run_id != deployment.check_run_id:
        deployment.check_run_id = check_run_id
        Deployment.update(check_run_id=check_run_id).where(Deployment.id == deployment.id).execute()
    _start_github_deployment(github, deployment, report, log)


def _start_github_deployment(
    github: Installation, deployment: Deployment, report: reporting.Report, log: BuildLog
) -> None:
    """Create the GitHub Deployment (once) and mark it in progress; a refusal is not fatal."""
    repo = deployment.project.full_name
    try:
        if deployment.github_deployment_id is None:
            body = reporting.deployment_body(
                ref=deployment.branch if deployment.branch and not deployment.from_fork else deployment.commit_sha,
                environment=deployment.environment or "Preview",
                production=deployment.environment == "Production",
                deployment_id=deployment.id,
                sha=deployment.commit_sha,
            )
            github_id = github.create_deployment(repo, body)
            if github_id is None:
                log.step("GitHub did not create a deployment (it answered 202); going on without one")
                return
            deployment.github_deployment_id = github_id
            Deployment.update(github_deployment_id=github_id).where(Deployment.id == deployment.id).execute()
        github.create_deployment_status(repo, deployment.github_deployment_id, reporting.deployment_status_body(report))
    except GitHubError as error:
        if error.status_code is None or error.status_code >= 500:
            raise
        log.step(f"GitHub refused the deployment record ({error}); the build goes on")


def report_finished(runtime: Runtime, deployment: Deployment) -> None:
    """Send the final status and check run from what the database says."""
    github = runtime.installation(deployment.project.installation_id)
    tail: tuple[str, ...] = ()
    if deployment.outcome not in ("success", "skipped", "cancelled") and deployment.logs_key:
        tail = tuple(_stored_tail(runtime, deployment))
    report = replace(
        base_report(runtime, deployment), outcome=deployment.outcome, reason=deployment.reason, log_tail=tail
    )
    reporting.send_status(github, report)
    check_run_id = reporting.send_check_run(github, report, deployment.check_run_id)
    if check_run_id != deployment.check_run_id:
        Deployment.update(check_run_id=check_run_id).where(Deployment.id == deployment.id).execute()
    if deployment.github_deployment_id is not None:
        github.create_deployment_status(
            deployment.project.full_name,
            deployment.github_deployment_id,
            reporting.deployment_status_body(report),
        )
    reporting.react_to_result(
        github, repo=deployment.project.full_name, comment_id=deployment.command_comment_id, outcome=deployment.outcome
    )


def _stored_tail(runtime: Runtime, deployment: Deployment) -> list[str]:
    try:
        text = runtime.storage.read_bytes(str(deployment.logs_key)).decode("utf-8", errors="replace")
    except InfrastructureError:
        return []
    return text.splitlines()[-reporting.LOG_TAIL_LINES :]


@contextmanager
def workspace(deployment_id: str) -> Iterator[Path]:
    """A private, fresh folder for one build, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"dyonisus-{deployment_id}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_repo_config(source_dir: Path) -> RepoConfig:
    for name in CONFIG_FILE_NAMES:
        path = source_dir / name
        if path.is_file():
            try:
                return parse_config(path.read_text(encoding="utf-8"))
            except ConfigError as error:
                raise BuildFailed(str(error)) from None
            except UnicodeDecodeError:
                raise BuildFailed(f"{name} is not UTF-8 text") from None
    return RepoConfig()


def fork_config(github: Installation, deployment: Deployment) -> RepoConfig:
    """A fork's code never chooses its own build: the config comes from the default branch."""
    project = deployment.project
    for name in CONFIG_FILE_NAMES:
        text = github.get_file_text(project.full_name, name, project.default_branch)
        if text is not None:
            try:
                return parse_config(text)
            except ConfigError as error:
                raise BuildFailed(f"{error} (read from {project.default_branch})") from None
    return RepoConfig()


def builder_for(name: str, settings: Settings) -> Builder:
    if name == "static":
        return StaticBuilder()
    if name == "docker":
        return DockerBuilder(settings)
    raise BuildFailed(f"the {name} builder is not available on this service")


def build(
    runtime: Runtime, deployment: Deployment, github: Installation, work: Path, log: BuildLog, heartbeat: Heartbeat
) -> BuildOutput:
    """Fetch, unpack and build; raises BuildFailed, BuildCancelled or InfrastructureError."""
    repo = deployment.project.full_name
    _check_skip_marker(github, deployment)
    log.step(f"fetching {repo}@{deployment.commit_sha}")
    archive = work / "source.tar.gz"
    github.download_tarball(repo, deployment.commit_sha, archive)
    source = work / "src"
    unpack_source(archive, source)
    archive.unlink()
    config = fork_config(github, deployment) if deployment.from_fork else read_repo_config(source)
    if (
        config.paths
        and deployment.changed_paths is not None
        and not paths_match(config.paths, deployment.changed_paths)
    ):
        raise BuildSkipped("Skipped: no changed file matches the paths in dyonisus.yml")
    name = choose_builder(config, source / config.root)
    Deployment.update(provider=name).where(Deployment.id == deployment.id).execute()
    timeout = config.timeout or runtime.settings.build_timeout
    log.step(f"building with the {name} builder (time limit {timeout} s)")
    home = work / "home"
    (home / "tmp").mkdir(parents=True)
    user = runtime.build_user
    if user is not None:
        # The build user may pass through the work folder (not list it) and owns src/ and home/.
        work.chmod(0o711)
        hand_over(source, user)
        hand_over(home, user)
    context = BuildContext(
        deployment_id=deployment.id,
        repository=repo,
        commit_sha=deployment.commit_sha,
        source_dir=source,
        work_dir=work,
        config=config,
        log=log,
        runner=CommandRunner(user=user),
        env=build_environment(home, npm_cache=runtime.npm_cache()),
        deadline=time.monotonic() + timeout,
        should_stop=heartbeat.cancelled.is_set,
    )
    return builder_for(name, runtime.settings).build(context)


def _check_skip_marker(github: Installation, deployment: Deployment) -> None:
    """A pull request event carries no commit message; read it before building."""
    message = deployment.commit_message
    if not message and deployment.trigger == "pull_request":
        commit = github.get_commit(deployment.project.full_name, deployment.commit_sha)
        message = str((commit.get("commit") or {}).get("message") or "")
    marker = skip_marker(message) if deployment.trigger in ("push", "pull_request") else None
    if marker:
        raise BuildSkipped(f"Skipped: {marker} in the commit message")


def finish(
    deployment_id: str, worker_id: str, *, status: DeploymentStatus, outcome: str, reason: str | None, **fields: object
) -> bool:
    """Record the end of a deployment this worker holds; False when it no longer holds it."""
    updated = (
        Deployment.update(
            status=status.value, outcome=outcome, reason=reason, finished_at=utcnow(), lease_until=None, **fields
        )
        .where(_holds(deployment_id, worker_id) & (Deployment.status == DeploymentStatus.BUILDING.value))
        .execute()
    )
    return bool(updated)
