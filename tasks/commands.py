"""The commands actor: check the commenter's permission, react, run the command, reply once."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import dramatiq

from bot import comments
from bot.commands import ALLOWED_PERMISSIONS, HELP
from bot.deployments import Request, cancel_deployments, request_deployment
from bot.github import Installation
from bot.plan import plan_pull_request, pr_lane
from bot.router import Outcome
from core.errors import GitHubError
from core.timeutil import utcnow
from models import CommentCommand, Deployment, DeploymentStatus, Project, PullRequest, database
from tasks.broker import UNBOUND
from tasks.deploy import RETRIED
from tasks.runtime import Runtime, current
from web.urls import details_url

log = logging.getLogger(__name__)
REPLY_MARKER = "<!-- dyonisus-deploy:reply -->"
MAX_ATTEMPTS = 4
BACKOFF_SECONDS = (2, 10, 30)
# https://docs.github.com/en/rest/issues/comments (observed limit: 65536 characters)
MAX_COMMENT = 65_000


@dramatiq.actor(broker=UNBOUND, queue_name="reports", max_retries=0)
def run_command(command_id: int) -> None:
    command = CommentCommand.get_or_none(CommentCommand.id == command_id)
    if command is None or command.state != "queued":
        return
    runtime = current()
    github = runtime.installation(command.project.installation_id)
    try:
        execute(runtime, github, command)
    except Exception as error:
        if isinstance(error, GitHubError):
            _retry_or_give_up(github, command, error)
            return
        log.exception("command %s failed", command.id)
        _reply_quietly(github, command, f"⚠️ `/{command.name}` failed inside the service; see its log.")
        _finish(command, "done")


def _retry_or_give_up(github: Installation, command: CommentCommand, error: GitHubError) -> None:
    attempts = command.attempts + 1
    CommentCommand.update(attempts=attempts).where(CommentCommand.id == command.id).execute()
    if attempts < MAX_ATTEMPTS:
        delay = BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS)) - 1]
        log.warning("command %s hit %s; trying again in %s s", command.id, error, delay)
        run_command.send_with_options(args=(command.id,), delay=delay * 1000)
        return
    _reply_quietly(github, command, f"⚠️ `/{command.name}` could not run: GitHub did not answer ({error}).")
    _finish(command, "done")


def execute(runtime: Runtime, github: Installation, command: CommentCommand) -> None:
    repo = command.project.full_name
    if command.problem:
        _react(github, command, "confused")
        _reply(github, command, f"{command.problem}. Comment `/help` for the list of commands.")
        _finish(command, "invalid")
        return
    if not command.on_pull_request:
        _reply(github, command, "Dyonisus Deploy commands work on pull requests, not on issues.")
        _finish(command, "done")
        return
    if command.name == "help":
        _reply(github, command, HELP)
        _finish(command, "done")
        return
    permission = _permission(github, repo, command.author)
    if permission not in ALLOWED_PERMISSIONS:
        _react(github, command, "confused")
        _reply(
            github,
            command,
            f"Sorry @{command.author}, only people with write access to {repo} can run `/{command.name}`.",
        )
        _finish(command, "refused")
        return
    if command.name != "deploy":
        _react(github, command, "eyes")
    RUNNERS[command.name](runtime, github, command)


def _permission(github: Installation, repo: str, user: str) -> str:
    try:
        return github.get_permission(repo, user)
    except GitHubError as error:
        if error.status_code == 404:
            return "none"
        raise


def _deploy(runtime: Runtime, github: Installation, command: CommentCommand) -> None:
    repo = command.project.full_name
    pull = github.get_pull_request(repo, command.number)
    if pull.get("state") != "open":
        _reply(github, command, f"#{command.number} is closed; nothing was deployed.")
        _finish(command, "done")
        return
    _remember(command.project, pull)
    head = pull.get("head") or {}
    sha = str(head.get("sha", ""))
    if command.args and sha != command.args:
        # A short SHA names a commit only when no other commit of the pull request (the head
        # included) begins with it: a fork can push a head that shares a reviewed commit's prefix.
        commits = {*github.list_pull_commits(repo, command.number), sha}
        matches = [c for c in commits if c.startswith(command.args)]
        if len(matches) != 1:
            _react(github, command, "confused")
            _reply(github, command, f"`{command.args}` is not one commit of #{command.number}; nothing was deployed.")
            _finish(command, "invalid")
            return
        sha = matches[0]
    base_repo_id = ((pull.get("base") or {}).get("repo") or {}).get("id")
    head_repo = head.get("repo")
    from_fork = not isinstance(head_repo, dict) or head_repo.get("id") != base_repo_id
    head_sha = str(head.get("sha", ""))
    if from_fork and command.expected_sha and head_sha != command.expected_sha and not command.args:
        # The fork pushed after the comment was written: that code was never reviewed.
        _react(github, command, "confused")
        _reply(
            github,
            command,
            f"The head of #{command.number} moved to `{head_sha[:7]}` after your comment; nothing was deployed. "
            "Review the new commits and comment `/deploy` again.",
        )
        _finish(command, "refused")
        return
    # Accepted: the approval is for this SHA, whatever the fork pushes from now on.
    _react(github, command, "eyes")
    deployment_id = _request(command, sha, str(head.get("ref", "")), from_fork)
    approval = " This approves that commit only; later pushes need a new `/deploy`." if from_fork else ""
    _reply_after_acting(
        github,
        command,
        f"🚀 Deploying `{sha[:7]}` as asked by @{command.author}.{approval} "
        f"[Follow the build]({details_url(runtime.settings, deployment_id)}).",
    )


def _remember(project: Project, pull: dict[str, Any]) -> None:
    """Keep the PullRequest row current from GitHub's own answer (a comment may come first)."""
    from bot.pull_request import remember

    plan = plan_pull_request({"action": "synchronize", "pull_request": pull})
    if plan is not None:
        remember(project, plan, state="open")


def _request(command: CommentCommand, sha: str, branch: str, from_fork: bool) -> str:
    """Create the deployment in one transaction, then enqueue what it asks for."""
    project: Project = command.project
    with database.atomic():
        outcome = request_deployment(
            project,
            Request(
                sha=sha,
                branch=branch,
                trigger="command",
                pr_number=command.number,
                source_ref=f"refs/pull/{command.number}/head" if from_fork else None,
                from_fork=from_fork,
                force=True,
            ),
        )
        (deployment_id,) = outcome.builds
        Deployment.update(command_comment_id=command.comment_id).where(Deployment.id == deployment_id).execute()
        CommentCommand.update(state="accepted", deployment_id=deployment_id).where(
            CommentCommand.id == command.id
        ).execute()
    _send(outcome)
    return deployment_id


def _send(outcome: Outcome) -> None:
    from tasks.deploy import enqueue_build

    for deployment_id in outcome.builds:
        enqueue_build(deployment_id)
    for actor, args in outcome.jobs:
        actor.send(*args)


def _latest(command: CommentCommand) -> Deployment | None:
    return (
        Deployment.select()
        .where((Deployment.project == command.project) & (Deployment.lane == pr_lane(command.number)))
        .order_by(Deployment.created_at.desc())
        .first()
    )


def _redeploy(runtime: Runtime, github: Installation, command: CommentCommand) -> None:
    latest = _latest(command)
    if latest is None:
        _reply(github, command, "There is no deployment of this pull request yet; comment `/deploy`.")
        _finish(command, "done")
        return
    deployment_id = _request(command, latest.commit_sha, latest.branch or "", latest.from_fork)
    _reply_after_acting(
        github,
        command,
        f"🔁 Redeploying `{latest.sha7}` as asked by @{command.author}. "
        f"[Follow the build]({details_url(runtime.settings, deployment_id)}).",
    )


def _cancel(runtime: Runtime, github: Installation, command: CommentCommand) -> None:
    unfinished = [DeploymentStatus.PENDING.value, DeploymentStatus.BUILDING.value]
    with database.atomic():
        outcome = cancel_deployments(
            Deployment.select().where(
                (Deployment.project == command.project)
                & (Deployment.lane == pr_lane(command.number))
                & Deployment.status.in_(unfinished)
            ),
            f"Cancelled by @{command.author}",
        )
    _send(outcome)
    count = len(outcome.notes)
    text = f"🛑 Cancelled {count} deployment{'s' if count != 1 else ''}." if count else "Nothing was running."
    _reply_after_acting(github, command, text)
    _finish(command, "done")


def _status(runtime: Runtime, github: Installation, command: CommentCommand) -> None:
    from tasks.deploy import update_pr_comment
    from tasks.previews import comment_view

    pull = PullRequest.get_or_none((PullRequest.project == command.project) & (PullRequest.number == command.number))
    if pull is None:
        _reply(github, command, "Dyonisus Deploy has not seen this pull request build yet.")
    else:
        update_pr_comment.send(command.project_id, command.number)
        body = comments.render(comment_view(runtime, command.project, pull)).replace(comments.MARKER + "\n", "")
        _reply(github, command, body)
    _finish(command, "done")


RUNNERS = {"deploy": _deploy, "redeploy": _redeploy, "cancel": _cancel, "status": _status}


def _finish(command: CommentCommand, state: str) -> None:
    CommentCommand.update(state=state).where(CommentCommand.id == command.id).execute()
    command.state = state


def _reply(github: Installation, command: CommentCommand, text: str) -> None:
    """Post the command's one reply (never a second one, even when run again)."""
    fresh = CommentCommand.get_by_id(command.id)
    if fresh.reply_id is not None:
        return
    if command.ignored:
        text += f"\n\n(Only the first command of a comment runs; {command.ignored} more were ignored.)"
    body = f"{REPLY_MARKER}\n> /{command.name} {command.args}".rstrip() + f"\n\n{text}"[:MAX_COMMENT]
    reply_id = github.create_comment(command.project.full_name, command.number, body)
    CommentCommand.update(reply_id=reply_id).where(CommentCommand.id == command.id).execute()


def _reply_after_acting(github: Installation, command: CommentCommand, text: str) -> None:
    """The reply of a command that already acted: running the command again is no retry (it
    is no longer queued, or it would act twice), so only the reply is sent again."""
    try:
        _reply(github, command, text)
    except GitHubError as error:
        log.warning("the reply to command %s failed (%s); sending it again", command.id, error)
        post_reply.send(command.id, text)


@dramatiq.actor(broker=UNBOUND, queue_name="reports", **RETRIED)  # type: ignore[call-overload]
def post_reply(command_id: int, text: str) -> None:
    command = CommentCommand.get_or_none(CommentCommand.id == command_id)
    if command is not None:
        _reply(current().installation(command.project.installation_id), command, text)


def _reply_quietly(github: Installation, command: CommentCommand, text: str) -> None:
    try:
        _reply(github, command, text)
    except GitHubError:
        log.warning("the reply to command %s could not be posted", command.id)


def _react(github: Installation, command: CommentCommand, content: str) -> None:
    github.create_reaction(command.project.full_name, command.comment_id, content)


def recover_commands() -> int:
    """Send again the commands still queued a while after they arrived."""
    stale = utcnow() - timedelta(seconds=30)
    rows = CommentCommand.select(CommentCommand.id).where(
        (CommentCommand.state == "queued") & (CommentCommand.created_at < stale)
    )
    count = 0
    for row in rows:
        run_command.send(row.id)
        count += 1
    return count
