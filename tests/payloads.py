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
