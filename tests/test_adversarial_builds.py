"""Builds that try to leak, escape or confuse: what they print, pack or configure."""

from __future__ import annotations

import pytest

from tests.conftest import Service
from tests.payloads import sha_for


def test_a_build_that_prints_the_private_key_does_not_leak_it(service: Service, rsa_key: tuple[str, str]) -> None:
    key = rsa_key[0]
    body_lines = [line for line in key.splitlines() if line and "-----" not in line]
    files: dict[str, str | bytes] = {
        "key.pem": key,
        # The key as a .env file holds it: one line with \n escapes.
        "env.txt": "GITHUB_PRIVATE_KEY=" + key.replace("\n", "\\n"),
        "public/index.html": "ok",
        "dyonisus.yml": "build_command: [cat, key.pem, env.txt]\noutput_dir: public\n",
    }
    data = service.wait(service.push(sha_for("print-key"), files))
    assert data["status"] == "READY"
    with service.http() as client:
        log = client.get(f"/api/deploy/{data['id']}/logs").text
    assert "$ cat key.pem env.txt" in log
    leaked = [line for line in body_lines if len(line) >= 16 and line in log]
    assert not leaked, f"{len(leaked)} lines of the private key are in the log"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # A file marked executable that is no program: exec() fails with ENOEXEC.
        ("install_command: [chmod, +x, run]\nbuild_command: [./run]\n", "./run"),
        ('build_command: ["ec\\0ho", hi]\n', "ec"),
        ("build_command: [echo, " + "x" * 200_000 + "]\n", "echo"),
    ],
    ids=["not-a-program", "nul-byte", "too-long"],
)
def test_a_command_that_cannot_start_fails_the_build_not_the_service(
    service: Service, config: str, expected: str
) -> None:
    files: dict[str, str | bytes] = {"run": "this is not a program", "public/index.html": "ok"}
    files["dyonisus.yml"] = config + "output_dir: public\n"
    data = service.wait(service.push(sha_for("cannot-start-" + config[:40]), files))
    assert data["status"] == "FAILED"
    assert data["outcome"] == "failure", data["reason"]
    assert expected in data["reason"] and "cannot be run" in data["reason"]
