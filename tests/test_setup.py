"""Registering the App from app.yml through GitHub's manifest flow, then deploying at once."""

from __future__ import annotations

import html
import json
import re
import stat
from pathlib import Path

import pytest

import web.setup
from tests.conftest import APP_ID, Service
from tests.payloads import push_payload, sha_for, sign


@pytest.fixture
def unregistered(make_service, tmp_path: Path, monkeypatch) -> Service:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(web.setup, "DOTENV", tmp_path / ".env")
    return make_service(github_app_id=None, github_private_key=None, github_webhook_secret=None)  # type: ignore[no-any-return]


def test_manifest_points_github_at_this_service(unregistered: Service) -> None:
    with unregistered.http() as client:
        page = client.get("/setup").text
    action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    assert action.startswith(f"{unregistered.settings.github_web_url}/settings/apps/new?state=")
    manifest = json.loads(html.unescape(re.search(r'name="manifest" value="([^"]+)"', page).group(1)))  # type: ignore[union-attr]
    base = unregistered.settings.public_url
    assert manifest["hook_attributes"]["url"] == f"{base}/api/github/webhooks"
    assert manifest["redirect_url"] == f"{base}/setup/callback"
    assert "push" in manifest["default_events"]
    with unregistered.http() as client:
        assert "/organizations/acme/settings/apps/new" in client.get("/setup?org=acme").text
        assert client.get('/setup?org=bad org"x').status_code == 400
        assert "local-warning" in page


def test_callback_saves_the_app_and_deploys_without_a_restart(
    unregistered: Service, rsa_key: tuple[str, str], tmp_path: Path
) -> None:
    with unregistered.http() as client:
        page = client.get("/setup").text
        state = re.search(r"state=([\w-]+)", page).group(1)  # type: ignore[union-attr]
        unregistered.fake.manifest_conversions["temporary-code"] = {
            "id": int(APP_ID),
            "slug": "dyonisus-deploy",
            "name": "Dyonisus Deploy",
            "client_id": "Iv1.0123456789abcdef",
            "pem": rsa_key[0],
            "webhook_secret": "fresh webhook secret",
            "html_url": "https://github.com/apps/dyonisus-deploy",
        }
        assert client.get("/setup/callback?code=temporary-code&state=wrong").status_code == 400
        done = client.get(f"/setup/callback?code=temporary-code&state={state}")
        assert done.status_code == 200 and "/apps/dyonisus-deploy/installations/new" in done.text
        # The link is single-use, and a registered service offers no second registration.
        assert client.get(f"/setup/callback?code=temporary-code&state={state}").status_code == 404
        assert client.get("/setup").status_code == 404

    dotenv = tmp_path / ".env"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    from core.settings import Settings

    saved = Settings.from_env({}, dotenv=dotenv)
    assert saved.github_app_id == APP_ID and saved.github_webhook_secret == "fresh webhook secret"
    assert saved.github_private_key == rsa_key[0].strip() + "\n"

    sha = sha_for("after-setup")
    unregistered.fake.add_tarball("Codertocat/Hello-World", sha, {"index.html": "registered"})
    body = json.dumps(push_payload(sha)).encode()
    response = unregistered.send(
        "push", body, secret="fresh webhook secret", headers={"X-Hub-Signature-256": sign("fresh webhook secret", body)}
    )
    assert response.status_code == 202
    assert unregistered.wait(response.json()["deployments"][0])["status"] == "READY"
