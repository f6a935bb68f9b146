"""The GitHub client's cost per call: no call may redo the work of setting up TLS."""

from __future__ import annotations

import ssl

import pytest

from bot.github import GitHubApp
from core.settings import Settings
from tests.conftest import APP_ID, WEBHOOK_SECRET
from tests.fakegithub import FakeGitHub
from tests.payloads import REPO, sha_for


def test_api_calls_load_the_ca_bundle_once(
    fake_github: FakeGitHub, rsa_key: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the CA bundle takes tens of milliseconds; it must not happen on every request."""
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args or kwargs)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    settings = Settings(
        github_app_id=APP_ID,
        github_private_key=rsa_key[0],
        github_webhook_secret=WEBHOOK_SECRET,
        github_api_url=fake_github.url,
    )
    installation = GitHubApp(settings).installation(1)
    sha = sha_for("tls set-up")
    for _ in range(5):
        installation.create_status(
            REPO, sha, state="pending", description="Building", target_url="http://localhost/", context="ci"
        )

    assert len(fake_github.statuses(sha)) == 5
    assert len(loads) <= 1, f"the CA bundle was loaded {len(loads)} times for 5 calls"
