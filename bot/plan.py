"""Pure decisions: what a payload asks of the service (no I/O, tested with recorded payloads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"


@dataclass(frozen=True)
class RepoRef:
    """The repository a payload is about, and the installation that may act on it."""

    github_id: int
    owner: str
    name: str
    html_url: str
    default_branch: str
    installation_id: int | None


@dataclass(frozen=True)
class BuildPlan:
    """Build `sha` of `branch`, or skip with `reason`."""

    build: bool
    reason: str
    sha: str | None = None
    branch: str | None = None
    message: str = ""


def repo_ref(payload: dict[str, Any]) -> RepoRef | None:
    repository = payload.get("repository")
    if not isinstance(repository, dict) or not isinstance(repository.get("id"), int):
        return None
    owner = repository.get("owner") or {}
    installation = payload.get("installation") or {}
    login = owner.get("login") or owner.get("name") or repository.get("full_name", "/").split("/")[0]
    return RepoRef(
        github_id=repository["id"],
        owner=str(login),
        name=str(repository.get("name", "")),
        html_url=str(repository.get("html_url", "")),
        default_branch=str(repository.get("default_branch") or repository.get("master_branch") or "main"),
        installation_id=installation.get("id") if isinstance(installation.get("id"), int) else None,
    )


def plan_push(payload: dict[str, Any]) -> BuildPlan:
    """A push to a branch builds its new head; tag pushes and deletions build nothing."""
    ref = str(payload.get("ref", ""))
    after = str(payload.get("after", ""))
    if not ref.startswith(BRANCH_PREFIX):
        return BuildPlan(False, "not a branch push (a tag or other ref)")
    if payload.get("deleted") or after == ZERO_SHA:
        return BuildPlan(False, "branch deleted")
    if len(after) != 40:
        return BuildPlan(False, "push without a new head commit")
    head = payload.get("head_commit") or {}
    return BuildPlan(
        True,
        "push",
        sha=after,
        branch=ref[len(BRANCH_PREFIX) :],
        message=str(head.get("message") or ""),
    )
