"""Fork pull requests: no way around the `/deploy` approval of an exact commit."""

from __future__ import annotations

import pytest

from models import Deployment
from tests.conftest import APP_ID, Service
from tests.payloads import REPO, check_payload, pr_payload, sha_for


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
