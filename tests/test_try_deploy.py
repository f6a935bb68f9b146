"""The README's "try a deploy locally": scripts/try_deploy.py builds a folder and serves its preview."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.services import ROOT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_try_deploy_builds_the_folder_and_serves_its_preview(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>tried locally</h1>")
    port = _free_port()
    before = set(Path(tempfile.gettempdir()).glob("dyonisus-try-*"))
    process = subprocess.Popen(
        [sys.executable, "scripts/try_deploy.py", str(site), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Ctrl-C to stop."):
                break
        output = "\n".join(lines)
        assert "status: READY" in output, output
        (preview,) = [line.removeprefix("preview: ") for line in lines if line.startswith("preview: ")]
        host = httpx.URL(preview).host
        answer = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": f"{host}:{port}"}, trust_env=False)
        assert answer.status_code == 200 and "tried locally" in answer.text
        assert "GitHub got commit status success" in output, output
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 0
    assert set(Path(tempfile.gettempdir()).glob("dyonisus-try-*")) <= before  # its folder is gone
