"""Projects and installations as GitHub describes them in payloads."""

from __future__ import annotations

from bot.plan import RepoRef
from core.timeutil import utcnow
from models import Deployment, DeploymentStatus, Installation, Project


def upsert_project(ref: RepoRef) -> Project:
    """The Project for a repository, created on first sight and kept current."""
    fields: dict[str, object] = {
        "owner_id": ref.owner,
        "name": ref.name,
        "github_url": ref.html_url,
        "default_branch": ref.default_branch,
    }
    if ref.installation_id is not None:
        fields["installation_id"] = ref.installation_id
    project = Project.get_or_none(Project.github_repo_id == ref.github_id)
    if project is None:
        return Project.create(github_repo_id=ref.github_id, **fields)
    changed = {key: value for key, value in fields.items() if getattr(project, key) != value}
    if changed:
        Project.update(**changed).where(Project.id == project.id).execute()
        for key, value in changed.items():
            setattr(project, key, value)
    return project


def create_deployment(
    project: Project, *, sha: str, branch: str | None, trigger: str, message: str = "", pr_number: int | None = None
) -> Deployment:
    return Deployment.create(
        project=project,
        commit_sha=sha,
        branch=branch,
        trigger=trigger,
        commit_message=message[:10_000],
        pr_number=pr_number,
        status=DeploymentStatus.PENDING.value,
        created_at=utcnow(),
    )


def record_installation(installation_id: int, login: str, *, suspended: bool = False) -> None:
    Installation.insert(id=installation_id, account_login=login, suspended=suspended).on_conflict(
        conflict_target=[Installation.id],
        update={Installation.account_login: login, Installation.suspended: suspended},
    ).execute()


def forget_installation(installation_id: int) -> None:
    Installation.delete().where(Installation.id == installation_id).execute()
    Project.update(installation_id=None).where(Project.installation_id == installation_id).execute()
