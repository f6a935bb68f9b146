"""Recorded GitHub payloads (tests/fixtures/payloads, from octokit/webhooks) and variants of them."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "payloads"
ZERO_SHA = "0" * 40
REPO = "Codertocat/Hello-World"
INSTALLATION_ID = 1


@cache
def _read(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text(encoding="utf-8")


def load(name: str) -> dict[str, Any]:
    """A fresh copy of tests/fixtures/payloads/<name>.json."""
    return copy.deepcopy(json.loads(_read(name)))


def sha_for(text: str) -> str:
    """A stable, realistic-looking commit SHA for a test label."""
    return hashlib.sha1(text.encode()).hexdigest()


def push_payload(
    sha: str, *, branch: str = "main", message: str = "Update the site", before: str | None = None
) -> dict[str, Any]:
    """A push of one commit to an existing branch, built from GitHub's branch-creation example."""
    payload = load("push.branch-created")
    payload["ref"] = f"refs/heads/{branch}"
    payload["before"] = before or sha_for(sha + "^")
    payload["after"] = sha
    payload["created"] = False
    payload["deleted"] = False
    payload["repository"]["default_branch"] = "main"
    payload["repository"]["master_branch"] = "main"
    head = payload["head_commit"]
    head["id"] = sha
    head["message"] = message
    payload["commits"] = [head]
    return payload


def branch_deleted_payload(branch: str = "feature") -> dict[str, Any]:
    payload = push_payload(ZERO_SHA, branch=branch)
    payload.update(deleted=True, after=ZERO_SHA, head_commit=None, commits=[])
    return payload


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def pr_payload(
    action: str,
    *,
    number: int = 2,
    head_sha: str,
    head_ref: str = "changes",
    fork: bool = False,
    deleted_fork: bool = False,
    merged: bool = False,
) -> dict[str, Any]:
    """A pull_request event from GitHub's `opened` example, moved to another head/action."""
    payload = load("pull_request.opened")
    payload["action"] = action
    payload["number"] = number
    pull = payload["pull_request"]
    pull["number"] = number
    pull["state"] = "closed" if action == "closed" else "open"
    pull["merged"] = merged
    pull["head"]["sha"] = head_sha
    pull["head"]["ref"] = head_ref
    pull["head"]["label"] = f"Codertocat:{head_ref}"
    payload["repository"]["default_branch"] = "main"
    pull["base"]["ref"] = "main"
    if fork:
        fork_repo = copy.deepcopy(pull["head"]["repo"])
        fork_repo.update(id=999_001, name="Hello-World", full_name="mallory/Hello-World", fork=True)
        fork_repo["owner"] = {**fork_repo["owner"], "login": "mallory", "id": 999_002}
        pull["head"]["repo"] = fork_repo
        pull["head"]["label"] = f"mallory:{head_ref}"
    if deleted_fork:
        pull["head"]["repo"] = None
    if action == "synchronize":
        payload["before"] = sha_for(head_sha + "^")
        payload["after"] = head_sha
    return payload


def check_payload(
    name: str, *, app_id: str, sha: str, external_id: str | None, identifier: str | None = None
) -> dict[str, Any]:
    """check_run.rerequested / requested_action or check_suite.rerequested, owned by app_id."""
    payload = load(name)
    if name.startswith("check_run"):
        run = payload["check_run"]
        run["app"]["id"] = int(app_id)
        run["check_suite"]["app"]["id"] = int(app_id)
        run["head_sha"] = sha
        run["external_id"] = external_id or ""
        run["check_suite"]["head_sha"] = sha
        run["check_suite"]["head_branch"] = "main"
        if identifier is not None:
            payload["requested_action"] = {"identifier": identifier}
    else:
        suite = payload["check_suite"]
        suite["app"]["id"] = int(app_id)
        suite["head_sha"] = sha
        suite["head_branch"] = "main"
    payload["installation"] = {"id": INSTALLATION_ID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="}
    payload["repository"] = load("push.branch-created")["repository"]
    payload["repository"]["default_branch"] = "main"
    return payload


def comment_payload(
    body: str | None,
    *,
    number: int = 2,
    user: str = "Codertocat",
    on_pull_request: bool = True,
    comment_id: int = 5001,
    action: str = "created",
    user_type: str = "User",
) -> dict[str, Any]:
    """issue_comment from GitHub's example, on a pull request unless told otherwise."""
    payload = load("issue_comment.created")
    payload["action"] = action
    payload["issue"]["number"] = number
    if on_pull_request:
        base = f"https://api.github.com/repos/{REPO}/pulls/{number}"
        payload["issue"]["pull_request"] = {"url": base, "html_url": base, "diff_url": base, "patch_url": base}
    comment = payload["comment"]
    comment["id"] = comment_id
    comment["body"] = body
    comment["user"] = {**comment["user"], "login": user, "type": user_type}
    return payload


def pull_json(
    number: int, *, head_sha: str, head_ref: str = "changes", fork: bool = False, state: str = "open"
) -> dict[str, Any]:
    """GET /repos/{o}/{r}/pulls/{n} as the fake GitHub serves it, from the webhook example."""
    pull = pr_payload("opened", number=number, head_sha=head_sha, head_ref=head_ref, fork=fork)["pull_request"]
    pull["state"] = state
    return pull
