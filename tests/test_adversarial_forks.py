"""Fork pull requests: no way around the `/deploy` approval of an exact commit."""

from __future__ import annotations

import pytest

from models import CommentCommand, Deployment
from tests.conftest import APP_ID, Service, wait_for
from tests.payloads import REPO, check_payload, comment_payload, pr_payload, pull_json, sha_for


@pytest.mark.parametrize("event", ["check_suite.rerequested", "check_run.rerequested", "check_run.requested_action"])
def test_a_rerun_of_an_unapproved_fork_commit_builds_nothing(service: Service, event: str) -> None:
    fork_sha = sha_for("unapproved-fork-head")
    service.fake.add_tarball(REPO, fork_sha, {"index.html": "fork code"})
    opened = service.send("pull_request", pr_payload("opened", head_sha=fork_sha, head_ref="main", fork=True))
    assert opened.status_code == 202 and opened.json()["deployments"] == []
    payload = check_payload(
        event, app_id=APP_ID, sha=fork_sha, external_id=None, identifier="redeploy" if "action" in event else None
    )
    # The fork's branch is called like the base repository's default branch.
    if event.startswith("check_suite"):
        payload["check_suite"]["head_branch"] = "main"
    else:
        payload["check_run"]["check_suite"]["head_branch"] = "main"
    response = service.send(event.split(".")[0], payload)
    assert response.status_code < 500
    assert response.json().get("deployments", []) == []
    assert Deployment.select().count() == 0
    assert not service.fake.requests("GET", "/tarball/")


def test_a_short_sha_shared_by_the_fork_head_is_not_an_approval_of_the_head(service: Service) -> None:
    # The fork pushed a head whose SHA begins like the reviewed commit's (28 bits: minutes of
    # brute force); `/deploy <reviewed prefix>` must not build that head.
    prefix = "abcdef1"
    reviewed, sneaked = prefix + sha_for("reviewed")[7:], prefix + sha_for("sneaked")[7:]
    service.fake.pulls[2] = pull_json(2, head_sha=sneaked, fork=True)
    service.fake.pull_commits[2] = [reviewed, sneaked]
    service.fake.add_tarball(REPO, reviewed, {"index.html": "reviewed"})
    service.fake.add_tarball(REPO, sneaked, {"index.html": "sneaked"})
    service.fake.permissions[(REPO.lower(), "codertocat")] = "write"
    service.send("issue_comment", comment_payload(f"/deploy {prefix}"))
    wait_for(lambda: all(c.state != "queued" for c in CommentCommand.select()))
    assert Deployment.select().count() == 0
    (reply,) = [c for c in service.fake.comments.values() if "dyonisus-deploy:reply" in c["body"]]
    assert "nothing was deployed" in reply["body"]
    service.send("issue_comment", comment_payload(f"/deploy {reviewed[:12]}", comment_id=5002))
    wait_for(lambda: Deployment.select().count() == 1)
    assert Deployment.get().commit_sha == reviewed
