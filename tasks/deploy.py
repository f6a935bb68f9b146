"""The actors: build a deployment, report it to GitHub, and recover work a crash left behind."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import dramatiq

from builders.base import BuildOutput
from builders.log import BuildLog
from core.errors import BuildCancelled, BuildFailed, GitHubError, InfrastructureError, StorageError
from core.timeutil import utcnow
from models import Deployment, DeploymentStatus
from tasks import pipeline
from tasks.broker import UNBOUND
from tasks.runtime import Runtime, current

log = logging.getLogger(__name__)

# Builds enforce their own time limits; Dramatiq's default of 10 minutes must not cut them.
ACTOR_TIME_LIMIT_MS = 48 * 3600 * 1000
STALE_PENDING_SECONDS = 10


@dramatiq.actor(broker=UNBOUND, queue_name="builds", max_retries=0, time_limit=ACTOR_TIME_LIMIT_MS)
def build_deployment(deployment_id: str) -> None:
    runtime = current()
    try:
        run_deployment(runtime, deployment_id)
    except Exception as error:
        log.exception("deployment %s failed unexpectedly", deployment_id)
        fail_unexpectedly(runtime, deployment_id, error)


def _retry_report(retries: int, error: Exception) -> bool:
    return isinstance(error, InfrastructureError) and retries < 12


@dramatiq.actor(
    broker=UNBOUND,
    queue_name="reports",
    max_retries=12,
    min_backoff=1000,
    max_backoff=300_000,
    retry_when=_retry_report,
)
def report_deployment(deployment_id: str) -> None:
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is not None and deployment.state.finished:
        pipeline.report_finished(current(), deployment)


def enqueue_build(deployment_id: str, *, delay_seconds: float = 0) -> None:
    """Send the build message and remember that it was sent (see recover_deployments)."""
    delay = int(delay_seconds * 1000) if delay_seconds else None
    build_deployment.send_with_options(args=(deployment_id,), delay=delay)
    Deployment.update(enqueued=True).where(Deployment.id == deployment_id).execute()


def run_deployment(runtime: Runtime, deployment_id: str) -> None:
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
            pipeline.report_started(runtime, github, deployment)
            output = pipeline.build(runtime, deployment, github, work, build_log, heartbeat)
            build_log.step("build succeeded; storing the artifact")
            fields = _store(runtime, deployment.id, work, output, build_log)
            pipeline.finish(
                deployment.id, worker, status=DeploymentStatus.READY, outcome="success", reason=None, **fields
            )
        except BuildCancelled:
            reason = Deployment.get_by_id(deployment.id).reason or "Cancelled"
            pipeline.finish(
                deployment.id,
                worker,
                status=DeploymentStatus.CANCELLED,
                outcome="cancelled",
                reason=reason,
                logs_key=_store_log(runtime, deployment.id, build_log),
            )
        except BuildFailed as error:
            build_log.step(f"build failed: {error.reason}")
            pipeline.finish(
                deployment.id,
                worker,
                status=DeploymentStatus.FAILED,
                outcome=error.conclusion,
                reason=error.reason,
                logs_key=_store_log(runtime, deployment.id, build_log),
            )
        except InfrastructureError as error:
            build_log.step(f"service error: {error}")
            logs = _store_log(runtime, deployment.id, build_log)
            if deployment.attempts < pipeline.MAX_ATTEMPTS and _requeue(deployment, worker):
                delay = pipeline.BACKOFF_SECONDS[min(deployment.attempts, len(pipeline.BACKOFF_SECONDS)) - 1]
                log.warning("deployment %s hit %s; retrying in %s s", deployment.id, error, delay)
                enqueue_build(deployment.id, delay_seconds=delay)
                return False
            pipeline.finish(
                deployment.id, worker, status=DeploymentStatus.FAILED, outcome="error", reason=str(error), logs_key=logs
            )
        finally:
            build_log.close()
    return True


def _store(
    runtime: Runtime, deployment_id: str, work: Path, output: BuildOutput, build_log: BuildLog
) -> dict[str, object]:
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


def _report(runtime: Runtime, deployment_id: str) -> None:
    deployment = Deployment.get_by_id(deployment_id)
    try:
        pipeline.report_finished(runtime, deployment)
    except GitHubError as error:
        log.warning("reporting %s failed (%s); retrying in the background", deployment_id, error)
        report_deployment.send(deployment_id)


def fail_unexpectedly(runtime: Runtime, deployment_id: str, error: Exception) -> None:
    reason = f"internal error of the service ({type(error).__name__}); see the service log"
    finished = (
        Deployment.update(
            status=DeploymentStatus.FAILED.value, outcome="error", reason=reason, finished_at=utcnow(), lease_until=None
        )
        .where(
            (Deployment.id == deployment_id)
            & Deployment.status.in_([DeploymentStatus.PENDING.value, DeploymentStatus.BUILDING.value])
        )
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
