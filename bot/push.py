"""`push` events: every push to a branch deploys its new head."""

from __future__ import annotations

from bot.deployments import Request, open_pull_request_for, request_deployment
from bot.plan import changed_paths, plan_push, repo_ref
from bot.projects import upsert_project
from bot.router import Event, Outcome, Router

router = Router()


@router.register("push")
def push(event: Event) -> Outcome:
    plan = plan_push(event.payload)
    ref = repo_ref(event.payload)
    if not plan.build or ref is None:
        return Outcome(notes=[f"no build: {plan.reason if ref else 'no repository in the payload'}"])
    if ref.installation_id is None:
        return Outcome(notes=["no build: the delivery names no installation of the App"])
    assert plan.sha is not None
    project = upsert_project(ref)
    pull = open_pull_request_for(project, plan.branch)
    return request_deployment(
        project,
        Request(
            sha=plan.sha,
            branch=plan.branch,
            trigger="push",
            pr_number=pull.number if pull else None,
            message=plan.message,
            changed_paths=changed_paths(event.payload),
        ),
    )
