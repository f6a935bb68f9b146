"""Pure decisions: what a payload asks of the service (no I/O, tested with recorded payloads)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"
_SHA = re.compile(r"^[0-9a-f]{40}$")
# Ids are kept in BIGINT columns, pull request numbers in INTEGER ones.
MAX_ID = 2**63 - 1
MAX_NUMBER = 2**31 - 1


def mapping(value: Any) -> dict[str, Any]:
    """A payload field that should be a JSON object: itself, or an empty one when it is not."""
    return value if isinstance(value, dict) else {}


def identifier(value: Any, *, maximum: int = MAX_ID) -> int | None:
    """A payload field that should be a positive integer id or number, or None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
        return None
    return value


def text(value: Any) -> str | None:
    """A payload field that should be a string, or None."""
    return value if isinstance(value, str) else None


def is_sha(value: str) -> bool:
    return bool(_SHA.match(value))


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
    repository = mapping(payload.get("repository"))
    github_id = identifier(repository.get("id"))
    name = text(repository.get("name"))
    if github_id is None or not name:
        return None
    owner = mapping(repository.get("owner"))
    login = text(owner.get("login")) or text(owner.get("name")) or (text(repository.get("full_name")) or "/")
    return RepoRef(
        github_id=github_id,
        owner=login.split("/")[0],
        name=name,
        html_url=text(repository.get("html_url")) or "",
        default_branch=text(repository.get("default_branch")) or text(repository.get("master_branch")) or "main",
        installation_id=identifier(mapping(payload.get("installation")).get("id")),
    )


def plan_push(payload: dict[str, Any]) -> BuildPlan:
    """A push to a branch builds its new head; tag pushes and deletions build nothing."""
    ref = text(payload.get("ref")) or ""
    after = text(payload.get("after")) or ""
    if not ref.startswith(BRANCH_PREFIX):
        return BuildPlan(False, "not a branch push (a tag or other ref)")
    if payload.get("deleted") or after == ZERO_SHA:
        return BuildPlan(False, "branch deleted")
    if not is_sha(after):
        return BuildPlan(False, "push without a new head commit")
    head = mapping(payload.get("head_commit"))
    return BuildPlan(
        True,
        "push",
        sha=after,
        branch=ref[len(BRANCH_PREFIX) :],
        message=text(head.get("message")) or "",
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
        if not isinstance(commit, dict):
            return None
        for key in ("added", "modified", "removed"):
            listed = commit.get(key) or []
            if not isinstance(listed, list):
                return None
            paths.update(str(path) for path in listed)
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
    pull = mapping(payload.get("pull_request"))
    number = identifier(pull.get("number"), maximum=MAX_NUMBER)
    head = mapping(pull.get("head"))
    base = mapping(pull.get("base"))
    head_sha = text(head.get("sha")) or ""
    if number is None or not is_sha(head_sha):
        return None
    head_repo = head.get("repo")
    base_repo = mapping(base.get("repo")) or mapping(payload.get("repository"))
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
        number=number,
        head_sha=head_sha,
        head_ref=text(head.get("ref")) or "",
        base_ref=text(base.get("ref")) or "",
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
        suite = mapping(payload.get("check_suite"))
        sha = text(suite.get("head_sha")) or ""
        if action != "rerequested" or not is_this_app(suite.get("app"), app_id) or not is_sha(sha):
            return None
        return CheckAction(REDEPLOY, None, sha, text(suite.get("head_branch")))
    run = mapping(payload.get("check_run"))
    sha = text(run.get("head_sha")) or ""
    if not is_this_app(run.get("app"), app_id) or not is_sha(sha):
        return None
    branch = text(mapping(run.get("check_suite")).get("head_branch"))
    external_id = text(run.get("external_id")) or None
    if action == "rerequested":
        return CheckAction(REDEPLOY, external_id, sha, branch)
    if action == "requested_action":
        button = mapping(payload.get("requested_action")).get("identifier")
        if button in (REDEPLOY, CANCEL):
            return CheckAction(button, external_id, sha, branch)
    return None
