"""`check_run` and `check_suite` events of this App: Re-run, and the Redeploy and Cancel buttons."""

from __future__ import annotations

from bot.deployments import Request, cancel_deployments, request_deployment
from bot.plan import CANCEL, CheckAction, plan_check_event, repo_ref
from bot.projects import upsert_project
from bot.router import Event, Outcome, Router
from models import Deployment, DeploymentStatus, Project

router = Router()


def _app_id() -> str | None:
    from tasks.runtime import current

    return current().settings.github_app_id


def _act(event: Event) -> Outcome:
    action = plan_check_event(event.name, event.payload, _app_id())
    ref = repo_ref(event.payload)
    if action is None or ref is None or ref.installation_id is None:
        return Outcome(notes=["ignored: not a check of this App"])
    project = upsert_project(ref)
    original = _original(project, action)
    if action.action == CANCEL:
        if original is None:
            return Outcome(notes=["nothing to cancel"])
        return cancel_deployments(
            Deployment.select().where(
                (Deployment.id == original.id)
                & Deployment.status.in_([DeploymentStatus.PENDING.value, DeploymentStatus.BUILDING.value])
            ),
            "Cancelled from the check run",
        )
    return _redeploy(project, action, original)


def _original(project: Project, action: CheckAction) -> Deployment | None:
    if action.deployment_id:
        found = Deployment.get_or_none((Deployment.id == action.deployment_id) & (Deployment.project == project))
        if found is not None:
            return found
    return (
        Deployment.select()
        .where((Deployment.project == project) & (Deployment.commit_sha == action.sha))
        .order_by(Deployment.created_at.desc())
        .first()
    )


def _redeploy(project: Project, action: CheckAction, original: Deployment | None) -> Outcome:
    if original is None:
        # Only a commit the service deployed is built again: the payload's SHA and branch
        # may be those of a fork's pull request, which runs only once approved.
        return Outcome(notes=[f"nothing to re-run: {action.sha[:7]} was never deployed"])
    if original.from_fork:
        # A fork's code runs only with a fresh approval (see bot/commands).
        return Outcome(notes=["a fork deployment needs a new /deploy approval"])
    return request_deployment(
        project,
        Request(
            sha=original.commit_sha,
            branch=original.branch,
            trigger="rerun",
            pr_number=original.pr_number,
            message=original.commit_message,
            source_ref=original.source_ref,
            force=True,
        ),
    )


router.register("check_run", action="rerequested")(_act)
router.register("check_run", action="requested_action")(_act)
router.register("check_suite", action="rerequested")(_act)
