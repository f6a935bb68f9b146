"""`push` events: every push to a branch deploys its new head."""

from __future__ import annotations

import logging

from bot.plan import plan_push, repo_ref
from bot.projects import create_deployment, upsert_project
from bot.router import Event, Outcome, Router

router = Router()
log = logging.getLogger(__name__)


@router.register("push")
def push(event: Event) -> Outcome:
    plan = plan_push(event.payload)
    ref = repo_ref(event.payload)
    if not plan.build or ref is None:
        return Outcome(notes=[f"no build: {plan.reason if ref else 'no repository in the payload'}"])
    if ref.installation_id is None:
        return Outcome(notes=["no build: the delivery names no installation of the App"])
    project = upsert_project(ref)
    assert plan.sha is not None
    deployment = create_deployment(project, sha=plan.sha, branch=plan.branch, trigger="push", message=plan.message)
    log.info("push to %s@%s: deployment %s", project.full_name, plan.branch, deployment.id)
    return Outcome(builds=[deployment.id], notes=[f"deployment {deployment.id} created"])
