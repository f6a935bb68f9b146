"""Asking for deployments inside a webhook's transaction: reuse, skip, supersede, create."""

from __future__ import annotations

from dataclasses import dataclass

from peewee import ModelSelect

from bot.plan import branch_lane, pr_lane, preview_environment, skip_marker
from bot.router import Outcome
from core.timeutil import utcnow
from models import Deployment, DeploymentStatus, Project, PullRequest

UNFINISHED = (DeploymentStatus.PENDING.value, DeploymentStatus.BUILDING.value)
LIVE = (*UNFINISHED, DeploymentStatus.READY.value)


@dataclass(frozen=True)
class Request:
    """One wish for a deployment of `sha`."""

    sha: str
    branch: str | None
    trigger: str
    pr_number: int | None = None
    message: str = ""
    changed_paths: list[str] | None = None
    source_ref: str | None = None
    from_fork: bool = False
    # A re-run or redeploy builds again even when this SHA has a live deployment.
    force: bool = False


def comment_job(project: Project, number: int) -> Outcome:
    from tasks.deploy import update_pr_comment

    return Outcome(jobs=[(update_pr_comment, (project.id, number))])


def report_job(deployment_id: str) -> Outcome:
    from tasks.deploy import report_deployment

    return Outcome(jobs=[(report_deployment, (deployment_id,))])


def open_pull_request_for(project: Project, branch: str | None) -> PullRequest | None:
    """The open same-repository pull request whose head is `branch`, if the service knows one."""
    if not branch:
        return None
    return (
        PullRequest.select()
        .where(
            (PullRequest.project == project)
            & (PullRequest.head_ref == branch)
            & (PullRequest.state == "open")
            & (PullRequest.from_fork == False)  # noqa: E712
        )
        .order_by(PullRequest.number.desc())
        .first()
    )


def request_deployment(project: Project, request: Request) -> Outcome:
    outcome = Outcome()
    production = request.pr_number is None and request.branch == project.default_branch
    lane = pr_lane(request.pr_number) if request.pr_number is not None else branch_lane(request.branch or "")
    environment = preview_environment(pr_number=request.pr_number, branch=request.branch, production=production)
    if not request.force:
        existing = _live_deployment(project, request)
        if existing is not None:
            return _link(project, existing, request, lane, environment)
    marker = None if request.force else skip_marker(request.message)
    deployment = Deployment.create(
        project=project,
        commit_sha=request.sha,
        branch=request.branch,
        trigger=request.trigger,
        commit_message=request.message[:10_000],
        pr_number=request.pr_number,
        lane=lane,
        environment=environment,
        changed_paths=request.changed_paths,
        source_ref=request.source_ref,
        from_fork=request.from_fork,
        created_at=utcnow(),
    )
    if marker:
        reason = f"Skipped: {marker} in the commit message"
        Deployment.update(
            status=DeploymentStatus.CANCELLED.value, outcome="skipped", reason=reason, finished_at=utcnow()
        ).where(Deployment.id == deployment.id).execute()
        outcome.merge(report_job(deployment.id))
        outcome.recorded.append(deployment.id)
        outcome.notes.append(f"deployment {deployment.id} skipped ({marker})")
    else:
        outcome.merge(supersede(project, lane, deployment))
        outcome.builds.append(deployment.id)
        outcome.notes.append(f"deployment {deployment.id} created")
    if request.pr_number is not None:
        outcome.merge(comment_job(project, request.pr_number))
    return outcome


def _live_deployment(project: Project, request: Request) -> Deployment | None:
    return (
        Deployment.select()
        .where(
            (Deployment.project == project)
            & (Deployment.commit_sha == request.sha)
            & (Deployment.branch == request.branch)
            & (Deployment.status.in_(LIVE))
        )
        .order_by(Deployment.created_at.desc())
        .first()
    )


def _link(project: Project, existing: Deployment, request: Request, lane: str, environment: str) -> Outcome:
    """The same commit is already deploying: attach the pull request to it, build nothing."""
    outcome = Outcome(notes=[f"deployment {existing.id} already covers {request.sha[:7]}"])
    if request.pr_number is not None and existing.pr_number is None:
        Deployment.update(pr_number=request.pr_number, lane=lane, environment=environment).where(
            Deployment.id == existing.id
        ).execute()
    number = request.pr_number if request.pr_number is not None else existing.pr_number
    if number is not None:
        outcome.merge(comment_job(project, number))
    return outcome


def supersede(project: Project, lane: str, newer: Deployment) -> Outcome:
    """Cancel the lane's queued and running deployments older than `newer`."""
    reason = f"Superseded by {newer.sha7}"
    return cancel_deployments(
        Deployment.select().where(
            (Deployment.project == project)
            & (Deployment.lane == lane)
            & (Deployment.id != newer.id)
            & (Deployment.created_at <= newer.created_at)
            & (Deployment.status.in_(UNFINISHED))
        ),
        reason,
    )


def cancel_deployments(query: ModelSelect[Deployment], reason: str) -> Outcome:
    """Queued ones end now; running ones are asked to stop (their worker ends them)."""
    outcome = Outcome()
    # Rows are locked in one order (by id): two webhooks cancelling the same deployments at
    # once would otherwise take them in different orders and deadlock on PostgreSQL.
    for deployment in list(query.order_by(Deployment.id)):
        ended = (
            Deployment.update(
                status=DeploymentStatus.CANCELLED.value, outcome="cancelled", reason=reason, finished_at=utcnow()
            )
            .where((Deployment.id == deployment.id) & (Deployment.status == DeploymentStatus.PENDING.value))
            .execute()
        )
        if ended:
            outcome.merge(report_job(deployment.id))
        else:
            Deployment.update(cancel_requested=True, reason=reason).where(
                (Deployment.id == deployment.id) & (Deployment.status == DeploymentStatus.BUILDING.value)
            ).execute()
        outcome.notes.append(f"deployment {deployment.id} cancelled: {reason}")
    return outcome
