"""Shared fixtures: an RSA key, the fake GitHub, and a running service on loopback."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from core.settings import Settings
from tests.fakegithub import FakeGitHub
from tests.keys import app_key_pair
from tests.payloads import REPO, push_payload, sign

APP_ID = "123456"
WEBHOOK_SECRET = "It's a Secret to Everybody"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip outside CI when a service is missing; in CI a missing service is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rsa_key() -> tuple[str, str]:
    return app_key_pair()


@pytest.fixture
def fake_github(rsa_key: tuple[str, str]) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(public_key=rsa_key[1], app_id=APP_ID).start()
    yield fake
    fake.stop()
    assert not fake.unmatched, f"the service made calls GitHub does not have: {fake.unmatched}"
    assert not fake.jwt_errors, f"App JWTs GitHub would reject: {fake.jwt_errors}"


class _Dispatcher:
    """Lets the server bind its port before the app (which needs PUBLIC_URL) exists."""

    app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.app(environ, start_response)


@dataclass
class Routed:
    """A webhook answer together with what routing the delivery did (it happens off the request)."""

    answer: httpx.Response
    result: dict[str, Any]

    @property
    def status_code(self) -> int:
        return self.answer.status_code

    @property
    def text(self) -> str:
        return json.dumps(self.json())

    def json(self) -> dict[str, Any]:
        notes = "; ".join(self.result.get("notes", []))
        return {**self.answer.json(), "message": notes or "accepted", "deployments": self.result.get("deployments", [])}


def routed(response: httpx.Response, *, timeout: float = 30) -> httpx.Response | Routed:
    """For an accepted delivery, wait until the service has routed it; other answers as they are."""
    if response.status_code != 202 or "delivery" not in response.json():
        return response
    from models import WebhookDelivery

    delivery_id = response.json()["delivery"]
    deadline = time.monotonic() + timeout
    while True:
        row = WebhookDelivery.get_or_none(WebhookDelivery.delivery_id == delivery_id)
        if row is not None and row.state in ("routed", "failed"):
            assert row.state == "routed", f"delivery {delivery_id} could not be routed"
            return Routed(response, dict(row.result or {}))
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery {delivery_id} was not routed")
        time.sleep(0.01)


@dataclass
class Service:
    settings: Settings
    fake: FakeGitHub
    app: Any
    server: BaseWSGIServer
    base_url: str

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, trust_env=False)

    def send(
        self,
        event: str,
        payload: dict[str, Any] | bytes,
        *,
        delivery: str | None = None,
        secret: str = WEBHOOK_SECRET,
        headers: dict[str, str] | None = None,
        route: bool = True,
    ) -> httpx.Response | Routed:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, body),
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/test",
        }
        sent.update(headers or {})
        with self.http() as client:
            response = client.post("/api/github/webhooks", content=body, headers=sent)
        return routed(response) if route else response

    def push(
        self,
        sha: str,
        files: dict[str, str | bytes] | None = None,
        *,
        branch: str = "main",
        source_dir: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Serve files as repo@sha, send the push, return the new deployment id."""
        self.fake.add_tarball(REPO, sha, files, source_dir=source_dir)
        response = self.send("push", push_payload(sha, branch=branch), **kwargs)
        assert response.status_code == 202, response.text
        (deployment_id,) = response.json()["deployments"]
        return str(deployment_id)

    def wait(self, deployment_id: str, *, timeout: float = 120) -> dict[str, Any]:
        """Poll the API until the deployment has finished, and return its JSON."""
        deadline = time.monotonic() + timeout
        with self.http() as client:
            while True:
                data = client.get(f"/api/deploy/{deployment_id}").json()
                if data["status"] in ("READY", "FAILED", "CANCELLED") and self._reported(deployment_id):
                    return dict(data)
                if time.monotonic() > deadline:
                    raise AssertionError(f"deployment {deployment_id} did not finish: {data}")
                time.sleep(0.05)

    def _reported(self, deployment_id: str) -> bool:
        """The final state reached GitHub too (a completed check run for this deployment)."""
        return any(
            run.get("external_id") == deployment_id and run.get("status") == "completed"
            for run in self.fake.check_runs.values()
        )

    def preview(self, deployment_id_or_label: str, path: str = "/") -> httpx.Response:
        host = f"{deployment_id_or_label}.{self.settings.preview_domain}:{self.port}"
        with self.http() as client:
            return client.get(path, headers={"Host": host})


@pytest.fixture
def make_service(tmp_path: Path, fake_github: FakeGitHub, rsa_key: tuple[str, str]) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(**overrides: Any) -> Service:
        dispatcher = _Dispatcher()
        server = make_server("127.0.0.1", 0, dispatcher, threaded=True)
        settings = Settings(
            github_app_id=APP_ID,
            github_private_key=rsa_key[0],
            github_webhook_secret=WEBHOOK_SECRET,
            github_api_url=fake_github.url,
            database_url=f"sqlite:///{tmp_path}/dyonisus.db",
            storage_url=str(tmp_path / "storage"),
            public_url=f"http://localhost:{server.server_port}",
            port=server.server_port,
            cache_dir=tmp_path / "cache",
        )
        settings = replace(settings, **overrides)
        from app import create_app

        dispatcher.app = create_app(settings)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        service = Service(settings, fake_github, dispatcher.app, server, f"http://127.0.0.1:{server.server_port}")
        started.append(service)
        return service

    yield start
    for service in started:
        service.server.shutdown()
        service.app.extensions["dyonisus"].stop()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service()


def tiny_site(title: str = "Hello from a tiny site") -> dict[str, str | bytes]:
    """A Node project with no dependencies whose build writes dist/."""
    build = (
        "const fs = require('fs');"
        "fs.mkdirSync('dist/assets', {recursive: true});"
        f"fs.writeFileSync('dist/index.html', '<!doctype html><title>{title}</title><link rel=stylesheet href=/assets/site.css><h1>{title}</h1>');"
        "fs.writeFileSync('dist/assets/site.css', 'h1 { color: teal }');"
        "console.log('built dist');"
    )
    return {
        "package.json": '{"name": "tiny-site", "version": "1.0.0", "private": true, "scripts": {"build": "node build.js"}}',
        "build.js": build,
    }


def wait_for(predicate: Callable[[], object], timeout: float = 30) -> None:
    """Poll until predicate() is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder builds may write to: they run as another user (BUILD_USER) when tests run as root."""
    folder = Path(tempfile.mkdtemp(prefix="dyonisus-shared-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def npm_available() -> bool:
    return shutil.which("npm") is not None
