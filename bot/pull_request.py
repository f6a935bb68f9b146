"""`pull_request` events: previews of the head commit, the sticky comment, teardown on close."""

from __future__ import annotations

from bot.deployments import Request, cancel_deployments, comment_job, request_deployment
from bot.plan import PullRequestPlan, plan_pull_request, pr_lane, repo_ref
from bot.projects import upsert_project
from bot.router import Event, Outcome, Router
from core.timeutil import utcnow
from models import Alias, Deployment, DeploymentStatus, Project, PullRequest

router = Router()


def remember(project: Project, plan: PullRequestPlan, *, state: str) -> PullRequest:
    """Insert or refresh the PullRequest row; events may arrive in any order."""
    fields = {
        "head_ref": plan.head_ref,
        "head_sha": plan.head_sha,
        "base_ref": plan.base_ref,
        "from_fork": plan.from_fork,
        "state": state,
        "updated_at": utcnow(),
    }
    PullRequest.insert(project=project, number=plan.number, **fields).on_conflict(
        conflict_target=[PullRequest.project, PullRequest.number],
        update=fields,
    ).execute()
    return PullRequest.get((PullRequest.project == project) & (PullRequest.number == plan.number))


def _context(event: Event) -> tuple[Project, PullRequestPlan] | None:
    ref = repo_ref(event.payload)
    plan = plan_pull_request(event.payload)
    if ref is None or plan is None or ref.installation_id is None:
        return None
    return upsert_project(ref), plan


@router.register("pull_request", action="opened")
@router.register("pull_request", action="synchronize")
@router.register("pull_request", action="reopened")
def pull_request_updated(event: Event) -> Outcome:
    context = _context(event)
    if context is None:
        return Outcome(notes=["no build: incomplete pull_request payload"])
    project, plan = context
    remember(project, plan, state="open")
    if not plan.build:
        # Forks are never built automatically; the sticky comment says how to approve.
        return Outcome(notes=[plan.reason]).merged(comment_job(project, plan.number))
    return request_deployment(
        project,
        Request(sha=plan.head_sha, branch=plan.head_ref, trigger="pull_request", pr_number=plan.number),
    )


@router.register("pull_request", action="closed")
def pull_request_closed(event: Event) -> Outcome:
    """Remove the preview aliases and stop the lane; a merge deploys from its push instead."""
    context = _context(event)
    if context is None:
        return Outcome(notes=["incomplete pull_request payload"])
    project, plan = context
    remember(project, plan, state="closed")
    Alias.delete().where((Alias.project == project) & (Alias.kind == f"pr-{plan.number}")).execute()
    outcome = cancel_deployments(
        Deployment.select().where(
            (Deployment.project == project)
            & (Deployment.lane == pr_lane(plan.number))
            & (Deployment.status.in_([DeploymentStatus.PENDING.value, DeploymentStatus.BUILDING.value]))
        ),
        "Pull request closed",
    )
    from tasks.deploy import close_pull_request

    outcome.jobs.append((close_pull_request, (project.id, plan.number)))
    outcome.notes.append(f"preview of #{plan.number} removed")
    return outcome
