"""Builds run as another user than the service: they cannot read its keys, files or environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builders.identity import resolve_build_user
from core.errors import ConfigError
from tests.conftest import Service, tiny_site
from tests.payloads import sha_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching the build user needs the service to run as root")


@ROOT_ONLY
def test_build_cannot_read_what_only_the_service_may(service: Service, tmp_path: Path) -> None:
    private = tmp_path / "service-secret.env"
    private.write_text("GITHUB_WEBHOOK_SECRET=only-for-the-service\n")
    private.chmod(0o600)
    files = tiny_site()
    files["build.js"] = (
        "const fs = require('fs'); const tryRead = (p) => { try { return fs.readFileSync(p, 'utf8'); }"
        " catch (e) { return 'DENIED ' + e.code; } };"
        "console.log('UID ' + process.getuid());"
        f"console.log('FILE ' + tryRead({str(private)!r}));"
        f"console.log('ENVIRON ' + tryRead('/proc/{os.getpid()}/environ').slice(0, 40));"
        "fs.mkdirSync('dist'); fs.writeFileSync('dist/index.html', 'ok');"
    )
    data = service.wait(service.push(sha_for("build-user"), files))
    assert data["status"] == "READY", data
    with service.http() as client:
        log = client.get(f"/api/deploy/{data['id']}/logs").text
    assert "UID 0" not in log and "UID " in log
    assert "FILE DENIED EACCES" in log and "only-for-the-service" not in log
    assert "ENVIRON DENIED EACCES" in log


def test_build_user_settings() -> None:
    with pytest.raises(ConfigError, match="names no user"):
        resolve_build_user("no-such-user-here")
    with pytest.raises(ConfigError, match="must not be root"):
        resolve_build_user("root")
    assert resolve_build_user("self") is None
    if os.geteuid() == 0:
        default = resolve_build_user(None)
        assert default is not None and default.name == "nobody" and default.uid != 0
