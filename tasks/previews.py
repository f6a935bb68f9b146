"""Aliases that follow the newest READY deployment, and the sticky comment kept in step."""

from __future__ import annotations

import logging
from datetime import timedelta

from bot import comments
from bot.plan import pr_lane
from core.aliases import branch_alias, pr_alias, production_alias
from core.errors import GitHubError
from core.timeutil import utcnow
from models import Alias, Deployment, Project, PullRequest
from tasks.runtime import Runtime
from web.urls import details_url, preview_url

log = logging.getLogger(__name__)
COMMENT_LOCK_SECONDS = 60


def alias_labels(deployment: Deployment) -> list[tuple[str, str]]:
    """(label, kind) of every alias this deployment should hold once READY."""
    project = deployment.project
    owner, name = project.owner_id, project.name
    labels: list[tuple[str, str]] = []
    if deployment.pr_number is not None:
        labels.append((pr_alias(owner, name, deployment.pr_number), f"pr-{deployment.pr_number}"))
    if deployment.branch and not deployment.from_fork:
        labels.append((branch_alias(owner, name, deployment.branch), f"branch:{deployment.branch}"))
        if deployment.branch == project.default_branch and deployment.pr_number is None:
            labels.append((production_alias(owner, name), "production"))
    return labels


def move_aliases(deployment: Deployment) -> list[str]:
    """Point the deployment's aliases at it unless a newer deployment holds them already."""
    moved = []
    closed = _pull_request_closed(deployment)
    for label, kind in alias_labels(deployment):
        if closed and kind.startswith("pr-"):
            continue
        before = Alias.get_or_none(Alias.label == label)
        updated = (
            Alias.insert(
                label=label,
                project=deployment.project,
                deployment=deployment,
                deployment_created_at=deployment.created_at,
                kind=kind,
            )
            .on_conflict(
                conflict_target=[Alias.label],
                update={Alias.deployment: deployment.id, Alias.deployment_created_at: deployment.created_at},
                where=(Alias.deployment_created_at < deployment.created_at),
            )
            .as_rowcount()
            .execute()
        )
        if updated:
            moved.append(label)
            if before is not None and before.deployment_id != deployment.id:
                _release(before.deployment_id)
    return moved


def _release(deployment_id: str) -> None:
    """A deployment no alias serves any more needs no running preview container."""
    if Alias.select().where(Alias.deployment == deployment_id).exists():
        return
    from tasks.deploy import stop_previews

    stop_previews.send([deployment_id])


def _pull_request_closed(deployment: Deployment) -> bool:
    if deployment.pr_number is None:
        return False
    pull = PullRequest.get_or_none(
        (PullRequest.project == deployment.project) & (PullRequest.number == deployment.pr_number)
    )
    return pull is not None and pull.state == "closed"


def aliases_of(deployment: Deployment) -> list[str]:
    return [alias.label for alias in Alias.select(Alias.label).where(Alias.deployment == deployment)]


def comment_view(runtime: Runtime, project: Project, pull: PullRequest) -> comments.CommentView:
    settings = runtime.settings
    latest = (
        Deployment.select()
        .where((Deployment.project == project) & (Deployment.lane == pr_lane(pull.number)))
        .order_by(Deployment.created_at.desc())
        .first()
    )
    view = comments.CommentView(
        project=project.full_name,
        number=pull.number,
        closed=pull.state == "closed",
        fork_waiting=pull.from_fork and pull.state == "open" and (latest is None or latest.commit_sha != pull.head_sha),
    )
    if latest is None:
        return view
    moments = [latest.finished_at, latest.started_at, latest.created_at]
    updated = max(moment for moment in moments if moment is not None)
    alias = Alias.get_or_none((Alias.project == project) & (Alias.kind == f"pr-{pull.number}"))
    return comments.CommentView(
        project=view.project,
        number=view.number,
        closed=view.closed,
        fork_waiting=view.fork_waiting,
        state=comments.state_of(latest.status, latest.outcome, latest.started_at is not None),
        preview_url=preview_url(settings, latest.id),
        alias_url=preview_url(settings, alias.label) if alias and alias.deployment_id == latest.id else None,
        details_url=details_url(settings, latest.id),
        commit=latest.sha7,
        updated=updated.strftime("%Y-%m-%d %H:%M:%S"),
        reason=latest.reason,
    )


def _lock(pull: PullRequest) -> bool:
    now = utcnow()
    free = PullRequest.comment_lock_until.is_null() | (PullRequest.comment_lock_until < now)
    taken = (
        PullRequest.update(comment_lock_until=now + timedelta(seconds=COMMENT_LOCK_SECONDS))
        .where((PullRequest.id == pull.id) & free)
        .execute()
    )
    return bool(taken)


def _unlock(pull: PullRequest) -> None:
    PullRequest.update(comment_lock_until=None).where(PullRequest.id == pull.id).execute()


def sync_comment(runtime: Runtime, project_id: str, number: int) -> bool:
    """Write the sticky comment if it changed; False when another worker holds the comment."""
    project = Project.get_or_none(Project.id == project_id)
    pull = PullRequest.get_or_none((PullRequest.project == project_id) & (PullRequest.number == number))
    if project is None or pull is None:
        return True
    if not _lock(pull):
        return False
    try:
        _write_comment(runtime, project, PullRequest.get_by_id(pull.id))
    finally:
        _unlock(pull)
    return True


def _write_comment(runtime: Runtime, project: Project, pull: PullRequest) -> None:
    body = comments.render(comment_view(runtime, project, pull))
    digest = comments.digest(body)
    if pull.comment_id and pull.comment_digest == digest:
        return
    github = runtime.installation(project.installation_id)
    repo = project.full_name
    comment_id = pull.comment_id or _find_comment(github, repo, pull.number)
    if comment_id:
        try:
            github.update_comment(repo, comment_id, body)
        except GitHubError as error:
            if error.status_code != 404:
                raise
            comment_id = None  # deleted by someone: write it anew
    if not comment_id:
        comment_id = github.create_comment(repo, pull.number, body)
    PullRequest.update(comment_id=comment_id, comment_digest=digest).where(PullRequest.id == pull.id).execute()


def _find_comment(github, repo: str, number: int) -> int | None:  # type: ignore[no-untyped-def]
    for comment in github.list_comments(repo, number):
        written_by_app = (comment.get("user") or {}).get("type") == "Bot"
        if written_by_app and comments.MARKER in (comment.get("body") or ""):
            return int(comment["id"])
    return None
