"""Pure decisions: what a payload asks of the service (no I/O, tested with recorded payloads)."""

from __future__ import annotations

import re
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


SKIP_MARKERS = ("[skip deploy]", "[deploy skip]", "[skip ci]", "[ci skip]")
PR_BUILD_ACTIONS = ("opened", "synchronize", "reopened")


def skip_marker(message: str) -> str | None:
    """The skip marker found in a commit message, if any (case-insensitive)."""
    lowered = message.lower()
    return next((marker for marker in SKIP_MARKERS if marker in lowered), None)


def branch_lane(branch: str) -> str:
    return f"branch:{branch}"


def pr_lane(number: int) -> str:
    return f"pr:{number}"


def preview_environment(*, pr_number: int | None, branch: str | None, production: bool) -> str:
    if production:
        return "Production"
    if pr_number is not None:
        return f"Preview (pr-{pr_number})"
    return f"Preview ({branch})"


def changed_paths(payload: dict[str, Any]) -> list[str] | None:
    """Every path a push's commits added, modified or removed; None when GitHub left some out.

    https://docs.github.com/en/webhooks/webhook-events-and-payloads#push lists at most
    2048 commits, so a longer push is treated as unknown (build).
    """
    commits = payload.get("commits")
    if not isinstance(commits, list) or not commits or len(commits) >= 2048:
        return None
    paths: set[str] = set()
    for commit in commits:
        for key in ("added", "modified", "removed"):
            paths.update(str(path) for path in commit.get(key) or [])
    return sorted(paths)


def paths_match(patterns: tuple[str, ...], paths: list[str]) -> bool:
    """Whether any changed path matches any pattern (`*` within a folder, `**` across)."""
    return any(_glob(pattern).match(path) for pattern in patterns for path in paths)


def _glob(pattern: str) -> re.Pattern[str]:
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.compile(f"^{regex}(?:/.*)?$")


@dataclass(frozen=True)
class PullRequestPlan:
    """What a pull_request event asks for."""

    number: int
    head_sha: str
    head_ref: str
    base_ref: str
    from_fork: bool
    build: bool
    reason: str


def plan_pull_request(payload: dict[str, Any]) -> PullRequestPlan | None:
    pull = payload.get("pull_request")
    if not isinstance(pull, dict) or not isinstance(pull.get("number"), int):
        return None
    head = pull.get("head") or {}
    base = pull.get("base") or {}
    head_repo = head.get("repo")
    base_repo = base.get("repo") or payload.get("repository") or {}
    # A deleted fork leaves head.repo null: treat it as a fork.
    from_fork = not isinstance(head_repo, dict) or head_repo.get("id") != base_repo.get("id")
    action = payload.get("action")
    build = action in PR_BUILD_ACTIONS and not from_fork and pull.get("state", "open") == "open"
    if from_fork and action in PR_BUILD_ACTIONS:
        reason = "pull request from a fork: a maintainer approves it with /deploy"
    elif not build:
        reason = f"no build for pull_request.{action}"
    else:
        reason = f"pull_request.{action}"
    return PullRequestPlan(
        number=pull["number"],
        head_sha=str(head.get("sha", "")),
        head_ref=str(head.get("ref", "")),
        base_ref=str(base.get("ref", "")),
        from_fork=from_fork,
        build=build,
        reason=reason,
    )


def is_this_app(app: Any, app_id: str | None) -> bool:
    """Whether a check suite or run belongs to this App (by numeric id or client id)."""
    if not isinstance(app, dict) or not app_id:
        return False
    return str(app.get("id")) == str(app_id) or app.get("client_id") == app_id


@dataclass(frozen=True)
class CheckAction:
    """A check run button or re-run: `redeploy` or `cancel` the deployment it names."""

    action: str
    deployment_id: str | None
    sha: str
    branch: str | None


REDEPLOY = "redeploy"
CANCEL = "cancel"


def plan_check_event(event: str, payload: dict[str, Any], app_id: str | None) -> CheckAction | None:
    """check_run.rerequested / requested_action and check_suite.rerequested of this App."""
    action = payload.get("action")
    if event == "check_suite":
        suite = payload.get("check_suite") or {}
        if action != "rerequested" or not is_this_app(suite.get("app"), app_id):
            return None
        return CheckAction(REDEPLOY, None, str(suite.get("head_sha", "")), suite.get("head_branch"))
    run = payload.get("check_run") or {}
    if not is_this_app(run.get("app"), app_id):
        return None
    suite = run.get("check_suite") or {}
    external_id = run.get("external_id") or None
    if action == "rerequested":
        return CheckAction(REDEPLOY, external_id, str(run.get("head_sha", "")), suite.get("head_branch"))
    if action == "requested_action":
        identifier = (payload.get("requested_action") or {}).get("identifier")
        if identifier in (REDEPLOY, CANCEL):
            return CheckAction(identifier, external_id, str(run.get("head_sha", "")), suite.get("head_branch"))
    return None
