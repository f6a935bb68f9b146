"""`issue_comment.created`: record the command; the commands actor checks permission and runs it."""

from __future__ import annotations

from bot.commands import plan_comment
from bot.plan import repo_ref
from bot.projects import upsert_project
from bot.router import Event, Outcome, Router
from models import CommentCommand, PullRequest

router = Router()


@router.register("issue_comment", action="created")
def issue_comment_created(event: Event) -> Outcome:
    from tasks.runtime import current

    plan = plan_comment(event.payload, app_id=current().settings.github_app_id)
    ref = repo_ref(event.payload)
    if plan is None or ref is None or ref.installation_id is None:
        return Outcome(notes=["no command"])
    project = upsert_project(ref)
    known = PullRequest.get_or_none((PullRequest.project == project) & (PullRequest.number == plan.number))
    inserted = (
        CommentCommand.insert(
            project=project,
            comment_id=plan.comment_id,
            number=plan.number,
            on_pull_request=plan.on_pull_request,
            author=plan.author,
            name=plan.command.name,
            args=plan.command.args[:200],
            problem=plan.command.problem,
            ignored=plan.ignored,
            expected_sha=known.head_sha if known and known.head_sha else None,
        )
        .on_conflict_ignore()
        .as_rowcount()
        .execute()
    )
    if not inserted:
        return Outcome(notes=["command already received"])
    command = CommentCommand.get(CommentCommand.comment_id == plan.comment_id)
    from tasks.commands import run_command

    return Outcome(jobs=[(run_command, (command.id,))], notes=[f"command /{plan.command.name} queued"])
