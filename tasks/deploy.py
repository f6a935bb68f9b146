"""The actors: build a deployment, report it to GitHub, keep the PR comment, recover lost work."""

from __future__ import annotations

import logging
from datetime import timedelta

import dramatiq

from builders.base import BuildOutput
from builders.log import BuildLog
from core.errors import (
    BuildCancelled,
    BuildFailed,
    BuildSkipped,
    GitHubError,
    InfrastructureError,
    StorageError,
)
from core.timeutil import utcnow
from models import Deployment, DeploymentStatus, Project
from tasks import pipeline, previews
from tasks.broker import UNBOUND
from tasks.runtime import Runtime, current

log = logging.getLogger(__name__)

# Builds enforce their own time limits; Dramatiq's default of 10 minutes must not cut them.
ACTOR_TIME_LIMIT_MS = 48 * 3600 * 1000
STALE_PENDING_SECONDS = 10
LANE_WAIT_SECONDS = 0.5
MAX_REPORT_RETRIES = 12


def _retry_on_infrastructure(retries: int, error: Exception) -> bool:
    return isinstance(error, InfrastructureError) and retries < MAX_REPORT_RETRIES


RETRIED = {
    "max_retries": MAX_REPORT_RETRIES,
    "min_backoff": 1000,
    "max_backoff": 300_000,
    "retry_when": _retry_on_infrastructure,
}


@dramatiq.actor(broker=UNBOUND, queue_name="builds", max_retries=0, time_limit=ACTOR_TIME_LIMIT_MS)
def build_deployment(deployment_id: str) -> None:
    runtime = current()
    try:
        run_deployment(runtime, deployment_id)
    except Exception as error:
        log.exception("deployment %s failed unexpectedly", deployment_id)
        fail_unexpectedly(deployment_id, error)


@dramatiq.actor(broker=UNBOUND, queue_name="reports", **RETRIED)  # type: ignore[call-overload]
def report_deployment(deployment_id: str) -> None:
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is not None and deployment.state.finished:
        pipeline.report_finished(current(), deployment)
        _refresh_comment(deployment)


@dramatiq.actor(broker=UNBOUND, queue_name="reports", **RETRIED)  # type: ignore[call-overload]
def update_pr_comment(project_id: str, number: int) -> None:
    if not previews.sync_comment(current(), project_id, number):
        # Another worker is writing this comment right now; come back when it is done.
        update_pr_comment.send_with_options(args=(project_id, number), delay=int(LANE_WAIT_SECONDS * 1000))


@dramatiq.actor(broker=UNBOUND, queue_name="reports", **RETRIED)  # type: ignore[call-overload]
def close_pull_request(project_id: str, number: int) -> None:
    """Mark the PR's GitHub deployments inactive and say in the comment that the preview is gone."""
    runtime = current()
    project = Project.get_or_none(Project.id == project_id)
    if project is None:
        return
    github = runtime.installation(project.installation_id)
    rows = Deployment.select(Deployment.github_deployment_id).where(
        (Deployment.project == project)
        & (Deployment.pr_number == number)
        & Deployment.github_deployment_id.is_null(False)
    )
    stop_previews.send(
        [
            row.id
            for row in Deployment.select(Deployment.id).where(
                (Deployment.project == project) & (Deployment.pr_number == number) & (Deployment.provider == "docker")
            )
        ]
    )
    for github_id in sorted({row.github_deployment_id for row in rows if row.github_deployment_id is not None}):
        github.create_deployment_status(
            project.full_name, github_id, {"state": "inactive", "description": "Pull request closed"}
        )
    update_pr_comment.send(project_id, number)


@dramatiq.actor(broker=UNBOUND, queue_name="reports", **RETRIED)  # type: ignore[call-overload]
def stop_previews(deployment_ids: list[str]) -> None:
    """Stop the preview containers of Docker deployments (static ones have none)."""
    from web.containers import stop_preview

    for deployment_id in deployment_ids:
        stop_preview(deployment_id)


def enqueue_build(deployment_id: str, *, delay_seconds: float = 0) -> None:
    """Send the build message and remember that it was sent (see recover_deployments)."""
    delay = int(delay_seconds * 1000) if delay_seconds else None
    build_deployment.send_with_options(args=(deployment_id,), delay=delay)
    Deployment.update(enqueued=True).where(Deployment.id == deployment_id).execute()


def _lane_busy(deployment_id: str) -> bool:
    """Whether another deployment of the same lane is still running (one build per lane)."""
    row = Deployment.get_or_none(Deployment.id == deployment_id)
    if row is None or not row.lane:
        return False
    return (
        Deployment.select()
        .where(
            (Deployment.project == row.project_id)
            & (Deployment.lane == row.lane)
            & (Deployment.id != row.id)
            & (Deployment.status == DeploymentStatus.BUILDING.value)
            & (Deployment.lease_until >= utcnow())
        )
        .exists()
    )


def run_deployment(runtime: Runtime, deployment_id: str) -> None:
    if _lane_busy(deployment_id):
        enqueue_build(deployment_id, delay_seconds=LANE_WAIT_SECONDS)
        return
    deployment = pipeline.claim(deployment_id, runtime.worker_id)
    if deployment is None:
        return
    if deployment.cancel_requested:
        pipeline.finish(
            deployment.id,
            runtime.worker_id,
            status=DeploymentStatus.CANCELLED,
            outcome="cancelled",
            reason=deployment.reason or "Cancelled",
        )
    elif not _build_and_record(runtime, deployment):
        return
    _report(runtime, deployment_id)


def _build_and_record(runtime: Runtime, deployment: Deployment) -> bool:
    """Build and record the result; False when the deployment went back to the queue."""
    worker = runtime.worker_id
    with pipeline.workspace(deployment.id) as work, pipeline.Heartbeat(deployment.id, worker) as heartbeat:
        build_log = BuildLog(work / "build.log")
        build_log.redact(*runtime.settings.secret_values())
        try:
            github = runtime.installation(deployment.project.installation_id)
            pipeline.report_started(runtime, github, deployment, build_log)
            _refresh_comment(deployment)
            output = pipeline.build(runtime, deployment, github, work, build_log, heartbeat)
            build_log.step("build succeeded; storing the artifact")
            fields = _store(runtime, deployment.id, output, build_log)
            if pipeline.finish(
                deployment.id, worker, status=DeploymentStatus.READY, outcome="success", reason=None, **fields
            ):
                previews.move_aliases(Deployment.get_by_id(deployment.id))
        except BuildSkipped as skipped:
            build_log.step(skipped.reason)
            _end(runtime, deployment, build_log, DeploymentStatus.CANCELLED, "skipped", skipped.reason)
        except BuildCancelled:
            reason = Deployment.get_by_id(deployment.id).reason or "Cancelled"
            _end(runtime, deployment, build_log, DeploymentStatus.CANCELLED, "cancelled", reason)
        except BuildFailed as error:
            build_log.step(f"build failed: {error.reason}")
            _end(runtime, deployment, build_log, DeploymentStatus.FAILED, error.conclusion, error.reason)
        except InfrastructureError as error:
            build_log.step(f"service error: {error}")
            if error.retryable and deployment.attempts < pipeline.MAX_ATTEMPTS and _requeue(deployment, worker):
                _store_log(runtime, deployment.id, build_log)
                delay = pipeline.BACKOFF_SECONDS[min(deployment.attempts, len(pipeline.BACKOFF_SECONDS)) - 1]
                log.warning("deployment %s hit %s; retrying in %s s", deployment.id, error, delay)
                enqueue_build(deployment.id, delay_seconds=delay)
                return False
            _end(runtime, deployment, build_log, DeploymentStatus.FAILED, "error", str(error))
        finally:
            build_log.close()
    return True


def _end(
    runtime: Runtime, deployment: Deployment, build_log: BuildLog, status: DeploymentStatus, outcome: str, reason: str
) -> None:
    logs = _store_log(runtime, deployment.id, build_log)
    pipeline.finish(deployment.id, runtime.worker_id, status=status, outcome=outcome, reason=reason, logs_key=logs)


def _store(runtime: Runtime, deployment_id: str, output: BuildOutput, build_log: BuildLog) -> dict[str, object]:
    fields: dict[str, object] = {"provider_meta": output.provider_meta}
    if output.artifact is not None:
        key = pipeline.artifact_key(deployment_id)
        runtime.storage.put_file(key, output.artifact)
        fields["artifact_key"] = key
    build_log.step("deployment ready")
    key = pipeline.logs_key(deployment_id)
    build_log.close()
    runtime.storage.put_file(key, build_log.path)
    fields["logs_key"] = key
    return fields


def _store_log(runtime: Runtime, deployment_id: str, build_log: BuildLog) -> str | None:
    key = pipeline.logs_key(deployment_id)
    build_log.close()
    try:
        runtime.storage.put_file(key, build_log.path)
    except StorageError:
        log.warning("the log of %s could not be stored", deployment_id)
        return None
    return key


def _requeue(deployment: Deployment, worker_id: str) -> bool:
    updated = (
        Deployment.update(status=DeploymentStatus.PENDING.value, lease_until=None, worker_id=None)
        .where((Deployment.id == deployment.id) & (Deployment.worker_id == worker_id))
        .execute()
    )
    return bool(updated)


def _refresh_comment(deployment: Deployment) -> None:
    if deployment.pr_number is not None:
        update_pr_comment.send(deployment.project_id, deployment.pr_number)


def _report(runtime: Runtime, deployment_id: str) -> None:
    deployment = Deployment.get_by_id(deployment_id)
    try:
        pipeline.report_finished(runtime, deployment)
    except GitHubError as error:
        log.warning("reporting %s failed (%s); retrying in the background", deployment_id, error)
        report_deployment.send(deployment_id)
        return
    _refresh_comment(deployment)


def fail_unexpectedly(deployment_id: str, error: Exception) -> None:
    reason = f"internal error of the service ({type(error).__name__}); see the service log"
    unfinished = [DeploymentStatus.PENDING.value, DeploymentStatus.BUILDING.value]
    finished = (
        Deployment.update(
            status=DeploymentStatus.FAILED.value,
            outcome="error",
            reason=reason,
            finished_at=utcnow(),
            lease_until=None,
        )
        .where((Deployment.id == deployment_id) & Deployment.status.in_(unfinished))
        .execute()
    )
    if finished:
        report_deployment.send(deployment_id)


def recover_deployments(*, at_start: bool) -> int:
    """Enqueue unfinished deployments that no live job holds; returns how many.

    At start every PENDING deployment is sent again (an in-process queue died with the
    process; a duplicate Redis message is harmless, since claim() lets one through).
    Later sweeps send only those never sent and those whose worker stopped beating.
    """
    now = utcnow()
    pending = Deployment.status == DeploymentStatus.PENDING.value
    if not at_start:
        pending &= (Deployment.enqueued == False) & (  # noqa: E712
            Deployment.created_at < now - timedelta(seconds=STALE_PENDING_SECONDS)
        )
    stale = (Deployment.status == DeploymentStatus.BUILDING.value) & (Deployment.lease_until < now)
    count = 0
    for row in Deployment.select(Deployment.id).where(pending | stale):
        enqueue_build(row.id)
        count += 1
    held = (Deployment.status == DeploymentStatus.BUILDING.value) & (Deployment.lease_until >= now)
    if at_start:
        # A lease of a process that just died runs out soon; look again then.
        for row in Deployment.select(Deployment.id, Deployment.lease_until).where(held):
            lease_until = row.lease_until or now
            enqueue_build(row.id, delay_seconds=(lease_until - now).total_seconds() + 1)
    return count
