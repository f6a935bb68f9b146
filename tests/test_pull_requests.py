"""Pull-request previews: one sticky comment, GitHub Deployments, aliases, supersession, teardown."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bot.comments import MARKER
from core.aliases import pr_alias, production_alias
from models import Deployment
from tests.conftest import APP_ID, Service, tiny_site, wait_for
from tests.payloads import REPO, check_payload, pr_payload, push_payload, sha_for

PR_ALIAS = pr_alias("Codertocat", "Hello-World", 2)


def _comments(service: Service) -> list[dict]:
    return [c for c in service.fake.comments.values() if c["issue"] == 2]


def _open_pr(service: Service, sha: str, files=None, *, action: str = "opened") -> str:  # type: ignore[no-untyped-def]
    service.fake.add_tarball(REPO, sha, files or {"index.html": f"<h1>{sha[:7]}</h1>"})
    response = service.send("pull_request", pr_payload(action, head_sha=sha))
    assert response.status_code == 202, response.text
    (deployment_id,) = response.json()["deployments"]
    return str(deployment_id)


def _settled_comment(service: Service, *texts: str) -> dict:
    wait_for(lambda: any(all(text in c["body"] for text in texts) for c in _comments(service)))
    (comment,) = _comments(service)
    return comment


def test_opened_builds_the_head_and_writes_one_sticky_comment(service: Service) -> None:
    sha = sha_for("pr-head")
    deployment_id = _open_pr(service, sha)
    data = service.wait(deployment_id)
    assert data["status"] == "READY" and data["commitSha"] == sha and data["branch"] == "changes"
    assert data["pullRequest"] == 2 and data["environment"] == "Preview (pr-2)"
    alias_url = f"http://{PR_ALIAS}.localhost:{service.port}/"
    assert alias_url in data["aliases"]
    assert service.preview(PR_ALIAS).text == f"<h1>{sha[:7]}</h1>"

    comment = _settled_comment(service, "Ready")
    assert comment["body"].startswith(MARKER)
    assert alias_url in comment["body"] and f"/deployments/{deployment_id}" in comment["body"]
    assert f"`{sha[:7]}`" in comment["body"]

    ((github_id, created),) = service.fake.deployments.items()
    assert created["ref"] == "changes" and created["environment"] == "Preview (pr-2)"
    assert created["transient_environment"] is True and created["production_environment"] is False
    states = [s["state"] for s in service.fake.deployment_statuses[github_id]]
    assert states == ["in_progress", "success"]
    final = service.fake.deployment_statuses[github_id][-1]
    assert final["environment_url"] == data["url"]
    assert final["log_url"].endswith(f"/deployments/{deployment_id}")


def test_many_pushes_keep_one_comment_and_move_the_alias(service: Service) -> None:
    shas = [sha_for(f"sync-{i}") for i in range(3)]
    service.wait(_open_pr(service, shas[0]))
    for sha in shas[1:]:
        service.wait(_open_pr(service, sha, action="synchronize"))
    _settled_comment(service, f"`{shas[-1][:7]}`", "Ready")
    assert len(service.fake.requests("POST", r"/issues/2/comments$")) == 1
    assert service.preview(PR_ALIAS).text == f"<h1>{shas[-1][:7]}</h1>"


def test_comment_is_not_edited_when_nothing_changed(service: Service) -> None:
    sha = sha_for("quiet")
    service.wait(_open_pr(service, sha))
    _settled_comment(service, "Ready")
    time.sleep(0.5)
    edits = len(service.fake.requests("PATCH", r"/issues/comments/"))
    # A redelivered synchronize for the same head changes nothing in the table.
    response = service.send("pull_request", pr_payload("synchronize", head_sha=sha))
    assert response.json()["deployments"] == []
    time.sleep(1.0)
    assert len(service.fake.requests("PATCH", r"/issues/comments/")) == edits
    assert len(_comments(service)) == 1


def test_deleted_comment_is_written_anew(service: Service) -> None:
    service.wait(_open_pr(service, sha_for("c1")))
    (comment,) = [_settled_comment(service, "Ready")]
    del service.fake.comments[comment["id"]]
    second = sha_for("c2")
    service.wait(_open_pr(service, second, action="synchronize"))
    _settled_comment(service, f"`{second[:7]}`", "Ready")
    assert len(_comments(service)) == 1


def test_synchronize_before_opened_gives_one_comment_and_one_deployment(service: Service) -> None:
    sha = sha_for("early-sync")
    service.fake.add_tarball(REPO, sha, {"index.html": "early"})
    first = service.send("pull_request", pr_payload("synchronize", head_sha=sha))
    second = service.send("pull_request", pr_payload("opened", head_sha=sha))
    assert len(first.json()["deployments"]) == 1 and second.json()["deployments"] == []
    service.wait(first.json()["deployments"][0])
    _settled_comment(service, "Ready")
    assert Deployment.select().count() == 1
    assert len(service.fake.requests("POST", r"/issues/2/comments$")) == 1


def test_push_and_synchronize_of_the_same_commit_build_once(service: Service) -> None:
    first = sha_for("base")
    service.wait(_open_pr(service, first))
    sha = sha_for("both")
    service.fake.add_tarball(REPO, sha, {"index.html": "both"})
    pushed = service.send("push", push_payload(sha, branch="changes"))
    synced = service.send("pull_request", pr_payload("synchronize", head_sha=sha))
    assert len(pushed.json()["deployments"]) == 1 and synced.json()["deployments"] == []
    data = service.wait(pushed.json()["deployments"][0])
    assert data["pullRequest"] == 2
    assert Deployment.select().where(Deployment.commit_sha == sha).count() == 1


def test_fork_pull_request_is_not_built_and_says_how_to_approve(service: Service) -> None:
    response = service.send("pull_request", pr_payload("opened", head_sha=sha_for("fork"), fork=True))
    assert response.status_code == 202 and response.json()["deployments"] == []
    comment = _settled_comment(service, "/deploy")
    assert "fork" in comment["body"]
    assert Deployment.select().count() == 0
    assert not service.fake.requests("GET", "/tarball/")


def test_deleted_fork_is_handled_without_a_5xx(service: Service) -> None:
    response = service.send("pull_request", pr_payload("synchronize", head_sha=sha_for("gone"), deleted_fork=True))
    assert response.status_code == 202
    assert Deployment.select().count() == 0
    _settled_comment(service, "fork")


def test_default_branch_push_is_production_and_a_merge_builds_once(service: Service) -> None:
    sha = sha_for("merge-commit")
    deployment_id = service.push(sha, {"index.html": "production"}, branch="main")
    data = service.wait(deployment_id)
    assert data["environment"] == "Production"
    (created,) = service.fake.deployments.values()
    assert created["environment"] == "Production" and created["production_environment"] is True
    assert created["transient_environment"] is False and created["ref"] == "main"
    assert service.preview(production_alias("Codertocat", "Hello-World")).text == "production"
    closed = service.send("pull_request", pr_payload("closed", head_sha=sha_for("pr"), merged=True))
    assert closed.status_code == 202 and closed.json()["deployments"] == []
    assert Deployment.select().count() == 1


def test_closing_removes_aliases_and_marks_the_deployment_inactive(service: Service) -> None:
    sha = sha_for("to-close")
    deployment_id = _open_pr(service, sha)
    service.wait(deployment_id)
    _settled_comment(service, "Ready")
    response = service.send("pull_request", pr_payload("closed", head_sha=sha))
    assert response.status_code == 202 and response.json()["deployments"] == []
    comment = _settled_comment(service, "was removed")
    assert "Visit preview" not in comment["body"]
    assert service.preview(PR_ALIAS).status_code == 404
    (github_id,) = service.fake.deployments
    wait_for(lambda: service.fake.deployment_statuses[github_id][-1]["state"] == "inactive")
    # The deployment's own address stays: it is an immutable record of that commit.
    assert service.preview(deployment_id).status_code == 200


def test_skip_marker_is_skipped_not_failed(service: Service) -> None:
    sha = sha_for("skip")
    service.fake.add_tarball(REPO, sha, tiny_site())
    response = service.send("push", push_payload(sha, message="Fix typo [skip ci]"))
    data = service.wait(response.json()["deployments"][0])
    assert data["status"] == "CANCELLED" and data["outcome"] == "skipped"
    (run,) = service.fake.check_runs.values()
    assert run["conclusion"] == "skipped" and "[skip ci]" in run["output"]["summary"]
    (status,) = service.fake.statuses(sha)
    assert status["state"] == "success" and "Skipped" in status["description"]
    assert not service.fake.requests("GET", "/tarball/")


def test_skip_marker_on_a_pull_request_head(service: Service) -> None:
    sha = sha_for("pr-skip")
    service.fake.commit_messages[sha] = "WIP [skip deploy]"
    data = service.wait(_open_pr(service, sha))
    assert data["outcome"] == "skipped"
    _settled_comment(service, "Skipped")


def test_path_filter_skips_pushes_that_touch_nothing_of_interest(service: Service) -> None:
    files = {**tiny_site(), "dyonisus.yml": "paths:\n  - site/**\n  - package.json\n"}
    sha = sha_for("docs-only")
    service.fake.add_tarball(REPO, sha, files)
    payload = push_payload(sha)
    payload["commits"][0].update(added=[], removed=[], modified=["README.md"])
    data = service.wait(service.send("push", payload).json()["deployments"][0])
    assert data["outcome"] == "skipped" and "paths" in data["reason"]
    (run,) = service.fake.check_runs.values()
    assert run["conclusion"] == "skipped"

    sha = sha_for("site-change")
    service.fake.add_tarball(REPO, sha, files)
    payload = push_payload(sha)
    payload["commits"][0].update(added=["site/index.md"], removed=[], modified=[])
    assert service.wait(service.send("push", payload).json()["deployments"][0])["status"] == "READY"


def test_rerun_and_buttons_of_this_app(service: Service) -> None:
    sha = sha_for("rerun")
    first = service.push(sha, {"index.html": "v1"})
    service.wait(first)
    (run,) = service.fake.check_runs.values()
    assert [a["identifier"] for a in run["actions"]] == ["redeploy"]

    rerun = service.send("check_run", check_payload("check_run.rerequested", app_id=APP_ID, sha=sha, external_id=first))
    (second,) = rerun.json()["deployments"]
    assert service.wait(second)["commitSha"] == sha

    button = service.send(
        "check_run",
        check_payload("check_run.requested_action", app_id=APP_ID, sha=sha, external_id=second, identifier="redeploy"),
    )
    (third,) = button.json()["deployments"]
    service.wait(third)
    suite = service.send(
        "check_suite", check_payload("check_suite.rerequested", app_id=APP_ID, sha=sha, external_id=None)
    )
    (fourth,) = suite.json()["deployments"]
    assert service.wait(fourth)["status"] == "READY"
    assert len({first, second, third, fourth}) == 4


def test_checks_of_other_apps_and_suite_requested_do_nothing(service: Service) -> None:
    sha = sha_for("other-app")
    other = service.send("check_run", check_payload("check_run.rerequested", app_id="999", sha=sha, external_id=None))
    assert other.json()["deployments"] == []
    requested = check_payload("check_suite.rerequested", app_id=APP_ID, sha=sha, external_id=None)
    requested["action"] = "requested"
    assert service.send("check_suite", requested).json().get("deployments", []) == []
    assert Deployment.select().count() == 0


def test_cancel_button_stops_a_running_build(service: Service) -> None:
    sha = sha_for("cancel-me")
    files = tiny_site()
    files["build.js"] = "console.log('slow'); setInterval(() => {}, 1000);"
    deployment_id = service.push(sha, files)
    wait_for(lambda: Deployment.get_by_id(deployment_id).status == "BUILDING")
    wait_for(lambda: "slow" in "".join(str(c.body) for c in service.fake.calls) or True)
    time.sleep(1.5)
    service.send(
        "check_run",
        check_payload(
            "check_run.requested_action", app_id=APP_ID, sha=sha, external_id=deployment_id, identifier="cancel"
        ),
    )
    data = service.wait(deployment_id, timeout=30)
    assert data["status"] == "CANCELLED"
    (run,) = service.fake.check_runs.values()
    assert run["conclusion"] == "cancelled"


def _slow_site(marker_dir: Path, label: str, seconds: float) -> dict[str, str | bytes]:
    files = tiny_site(label)
    files["build.js"] = (
        f"const fs = require('fs'); fs.writeFileSync({str(marker_dir / label)!r} + '.pid', String(process.pid));"
        f"setTimeout(() => {{ fs.mkdirSync('dist'); fs.writeFileSync('dist/index.html', {label!r}); }}, {int(seconds * 1000)});"
    )
    return files


def _live_builds(marker_dir: Path) -> int:
    alive = 0
    for pid_file in marker_dir.glob("*.pid"):
        try:
            stat = Path(f"/proc/{int(pid_file.read_text())}/stat").read_text()
        except (OSError, ValueError):
            continue
        alive += stat.split()[2] != "Z"
    return alive


class _Watcher:
    """Counts, every 20 ms, how many build processes are alive at once."""

    def __init__(self, marker_dir: Path) -> None:
        self.marker_dir = marker_dir
        self.most = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.most = max(self.most, _live_builds(self.marker_dir))


def test_new_push_supersedes_the_running_build(service: Service, shared_dir: Path) -> None:
    markers = shared_dir
    watcher = _Watcher(markers)
    first_sha, second_sha = sha_for("older"), sha_for("newer")
    first = service.push(first_sha, _slow_site(markers, "older", 30), branch="feature")
    wait_for(lambda: (markers / "older.pid").exists())
    second = service.push(second_sha, _slow_site(markers, "newer", 1), branch="feature")
    started = time.monotonic()
    older = service.wait(first)
    assert time.monotonic() - started < 15
    newer = service.wait(second)
    watcher.stop.set()

    assert older["status"] == "CANCELLED" and older["reason"] == f"Superseded by {second_sha[:7]}"
    assert newer["status"] == "READY"
    assert watcher.most == 1
    assert service.fake.statuses(first_sha)[-1]["state"] == "error"
    assert service.fake.statuses(first_sha)[-1]["description"] == f"Superseded by {second_sha[:7]}"
    runs = {run["external_id"]: run for run in service.fake.check_runs.values()}
    assert runs[first]["conclusion"] == "cancelled" and runs[second]["conclusion"] == "success"


def test_queued_deployment_superseded_before_it_starts(make_service, shared_dir: Path) -> None:  # type: ignore[no-untyped-def]
    service: Service = make_service(worker_concurrency=1)
    markers = shared_dir
    blocker = service.push(sha_for("blocker"), _slow_site(markers, "blocker", 3), branch="other")
    wait_for(lambda: (markers / "blocker.pid").exists())
    queued_sha = sha_for("queued")
    queued = service.push(queued_sha, {"index.html": "q"}, branch="feature")
    latest = service.push(sha_for("latest"), {"index.html": "latest"}, branch="feature")
    assert service.wait(queued)["status"] == "CANCELLED"
    assert service.wait(latest)["status"] == "READY"
    assert service.wait(blocker)["status"] == "READY"
    assert service.fake.statuses(queued_sha)[-1]["state"] == "error"
    assert not service.fake.requests("GET", f"/tarball/{queued_sha}")


def test_different_branches_build_side_by_side(service: Service, shared_dir: Path) -> None:
    markers = shared_dir
    watcher = _Watcher(markers)
    one = service.push(sha_for("left"), _slow_site(markers, "left", 2), branch="left")
    two = service.push(sha_for("right"), _slow_site(markers, "right", 2), branch="right")
    assert service.wait(one)["status"] == service.wait(two)["status"] == "READY"
    watcher.stop.set()
    assert watcher.most == 2
