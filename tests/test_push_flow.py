"""The push pipeline end to end with the fake GitHub: webhook → build → artifact → preview → report."""

from __future__ import annotations

import io
import tarfile

from tests.conftest import Service, tiny_site
from tests.payloads import REPO, sha_for


def test_push_builds_serves_and_reports(service: Service) -> None:
    sha = sha_for("first")
    deployment_id = service.push(sha, tiny_site())
    data = service.wait(deployment_id)

    assert data["status"] == "READY", data
    assert data["provider"] == "static"
    assert data["branch"] == "main"
    assert data["commitSha"] == sha
    assert data["startedAt"].endswith("Z") and data["finishedAt"].endswith("Z")
    page = service.preview(deployment_id)
    assert page.status_code == 200
    assert "Hello from a tiny site" in page.text
    css = service.preview(deployment_id, "/assets/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert service.preview(deployment_id, "/missing.js").status_code == 404

    states = [status["state"] for status in service.fake.statuses(sha)]
    assert states == ["pending", "success"]
    assert all(s["context"] == "dyonisus/deploy" for s in service.fake.statuses(sha))
    assert service.fake.statuses(sha)[0]["target_url"] == f"{service.settings.public_url}/deployments/{deployment_id}"
    (run,) = service.fake.check_runs.values()
    assert run["name"] == "Dyonisus Deploy" and run["conclusion"] == "success"
    assert run["details_url"].endswith(f"/deployments/{deployment_id}")

    with service.http() as client:
        artifact = client.get(data["artifactUrl"].replace(service.settings.public_url, ""))
        assert artifact.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(artifact.content)) as tar:
            names = tar.getnames()
        assert "index.html" in names
        log = client.get(data["logsUrl"].replace(service.settings.public_url, "")).text
        assert "npm run build" in log and "built dist" in log
        details = client.get(f"/deployments/{deployment_id}").text
        assert sha in details and "READY" in details and "built dist" in details


def test_failing_build_reports_log_tail(service: Service) -> None:
    sha = sha_for("failing")
    files = tiny_site()
    files["build.js"] = (
        "for (let i = 1; i <= 120; i++) console.log('step ' + i); console.error('boom: broken build'); process.exit(3);"
    )
    data = service.wait(service.push(sha, files))

    assert data["status"] == "FAILED"
    assert [s["state"] for s in service.fake.statuses(sha)] == ["pending", "failure"]
    (run,) = service.fake.check_runs.values()
    assert run["conclusion"] == "failure"
    assert "npm run build" in run["output"]["summary"] and "code 3" in run["output"]["summary"]
    text = run["output"]["text"]
    for i in range(75, 121):
        assert f"step {i}\n" in text
    assert "boom: broken build" in text


def test_repo_slug_in_reports(service: Service) -> None:
    sha = sha_for("slug")
    service.wait(service.push(sha, tiny_site()))
    assert service.fake.requests("POST", f"/repos/{REPO}/statuses/{sha}")
