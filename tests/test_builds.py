"""Builds that fail, time out or arrive in unsafe archives end FAILED with a clear reason."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import Service, tiny_site
from tests.fakegithub import FakeGitHub
from tests.payloads import REPO, push_payload, sha_for


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only a running process counts.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_build_time_out_stops_the_whole_process_group(make_service, shared_dir: Path) -> None:  # type: ignore[no-untyped-def]
    service: Service = make_service(build_timeout=3)
    pids = shared_dir / "pids"
    files = tiny_site()
    # The build starts a grandchild; both must be gone after the time-out.
    files["build.js"] = (
        "const {spawn} = require('child_process');"
        "const child = spawn('sleep', ['300'], {stdio: 'ignore'});"
        f"require('fs').writeFileSync({str(pids)!r}, process.pid + ' ' + child.pid);"
        "console.log('waiting forever'); setInterval(() => {}, 1000);"
    )
    sha = sha_for("timeout")
    started = time.monotonic()
    data = service.wait(service.push(sha, files))
    assert time.monotonic() - started < 60

    assert data["status"] == "FAILED"
    assert data["outcome"] == "timed_out"
    assert "time limit" in data["reason"]
    assert [s["state"] for s in service.fake.statuses(sha)] == ["pending", "failure"]
    (run,) = service.fake.check_runs.values()
    assert run["conclusion"] == "timed_out"
    assert "waiting forever" in run["output"]["text"]
    for pid in map(int, pids.read_text().split()):
        assert not _pid_alive(pid), f"process {pid} outlived the time-out"


def test_repository_timeout_overrides_the_service_default(make_service) -> None:  # type: ignore[no-untyped-def]
    service: Service = make_service(build_timeout=600)
    files = tiny_site()
    files["build.js"] = "setInterval(() => {}, 1000);"
    files["dyonisus.yml"] = "timeout: 2\n"
    data = service.wait(service.push(sha_for("repo-timeout"), files))
    assert data["outcome"] == "timed_out"


def _tarball(entries: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info in entries:
            payload = (data or {}).get(info.name)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def _file(name: str, content: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("label", "entries", "reason"),
    [
        ("dotdot", [_file("top/index.html", b"hi"), _file("top/../../escaped.txt", b"x")], "outside"),
        ("absolute", [_file("/tmp/dyonisus-absolute.txt", b"x")], "outside"),
        ("symlink-out", [_file("top/index.html", b"hi"), _symlink("top/link", "../../../../etc")], "unsafe"),
        ("symlink-abs", [_file("top/index.html", b"hi"), _symlink("top/passwd", "/etc/passwd")], "unsafe"),
    ],
)
def test_unsafe_source_archive_fails_and_writes_nothing_outside(
    service: Service, tmp_path: Path, label: str, entries: list[tarfile.TarInfo], reason: str
) -> None:
    sha = sha_for(label)
    contents = {info.name: b"hi" if info.name.endswith("index.html") else b"x" for info in entries if info.isfile()}
    service.fake.add_tarball(REPO, sha, raw=_tarball(entries, contents))
    before = set(Path("/tmp").iterdir())
    response = service.send("push", push_payload(sha))
    data = service.wait(response.json()["deployments"][0])

    assert data["status"] == "FAILED"
    assert data["outcome"] == "failure"
    assert "unsafe source archive" in data["reason"] and reason in data["reason"]
    assert not Path("/tmp/dyonisus-absolute.txt").exists()
    assert not any(p.name == "escaped.txt" for p in set(Path("/tmp").iterdir()) - before)
    (run,) = service.fake.check_runs.values()
    assert run["conclusion"] == "failure" and "unsafe source archive" in run["output"]["summary"]


def test_device_file_in_archive_is_refused(tmp_path: Path) -> None:
    from builders.unpack import unpack_source
    from core.errors import UnsafeArchive

    device = tarfile.TarInfo("top/null")
    device.type = tarfile.CHRTYPE
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tarball([_file("top/index.html", b"hi"), device], {"top/index.html": b"hi"}))
    with pytest.raises(UnsafeArchive, match="device"):
        unpack_source(archive, tmp_path / "out")


def test_missing_output_folder_says_what_to_set(service: Service) -> None:
    files = tiny_site()
    files["build.js"] = "console.log('built nothing');"
    data = service.wait(service.push(sha_for("no-output"), files))
    assert data["status"] == "FAILED"
    assert "output_dir" in data["reason"]


def test_bad_repository_config_fails_with_its_reason(service: Service) -> None:
    files = tiny_site()
    files["dyonisus.yml"] = "output_dir: ../../etc\n"
    data = service.wait(service.push(sha_for("bad-config"), files))
    assert data["status"] == "FAILED"
    assert "output_dir must be a path inside the repository" in data["reason"]


def test_config_file_commands_and_output_dir(service: Service) -> None:
    files = {
        "site/make.js": "require('fs').mkdirSync('public-out', {recursive: true});"
        "require('fs').writeFileSync('public-out/index.html', '<p>'+process.argv[2]+'</p>');",
        "dyonisus.yml": "root: site\nbuild_command: node make.js 'two words'\noutput_dir: public-out\n",
    }
    deployment_id = service.push(sha_for("config"), files)
    data = service.wait(deployment_id)
    assert data["status"] == "READY", data
    assert service.preview(deployment_id).text == "<p>two words</p>"


def test_plain_html_site_is_published_as_is(service: Service) -> None:
    deployment_id = service.push(sha_for("plain"), {"index.html": "<h1>plain</h1>", "about/index.html": "about"})
    assert service.wait(deployment_id)["status"] == "READY"
    assert service.preview(deployment_id, "/about/").text == "about"
    assert service.preview(deployment_id, "/about").text == "about"


def test_build_environment_holds_no_service_secret(service: Service, rsa_key: tuple[str, str]) -> None:
    files = tiny_site()
    files["build.js"] = (
        "console.log(JSON.stringify(process.env));"
        "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/index.html', 'ok');"
    )
    data = service.wait(service.push(sha_for("env"), files))
    with service.http() as client:
        log = client.get(f"/api/deploy/{data['id']}/logs").text
    assert '"CI":"1"' in log
    assert "It's a Secret to Everybody" not in log
    assert "PRIVATE KEY" not in log
    assert "ghs_" not in log


def test_preview_never_reads_outside_the_artifact(service: Service) -> None:
    deployment_id = service.push(sha_for("traversal"), {"index.html": "<h1>inside</h1>"})
    service.wait(deployment_id)
    for path in ("/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd"):
        response = service.preview(deployment_id, path)
        assert response.status_code in (400, 404), path
        assert "root:" not in response.text


def test_unknown_preview_host_is_404(service: Service) -> None:
    assert service.preview("cnosuchdeployment").status_code == 404
    # On a preview host every path belongs to the preview, /api/ included.
    deployment_id = service.push(sha_for("api-path"), {"index.html": "x", "api/deploy/index.html": "static api"})
    service.wait(deployment_id)
    assert service.preview(deployment_id, "/api/deploy/").text == "static api"


def test_token_is_cached_across_deployments(service: Service) -> None:
    for label in ("one", "two"):
        service.wait(service.push(sha_for(label), {"index.html": label}))
    assert service.fake.token_requests == 1


def test_github_enterprise_base_path(make_service, rsa_key: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    fake = FakeGitHub(public_key=rsa_key[1], app_id="123456", prefix="/api/v3").start()
    try:
        for base in (fake.url, fake.url + "/"):
            fake.calls.clear()
            service: Service = make_service(github_api_url=base.rstrip("/") if base.endswith("v3") else base)
            service.fake = fake
            sha = sha_for(base)
            fake.add_tarball(REPO, sha, {"index.html": "ghe"})
            response = service.send("push", push_payload(sha))
            data = service.wait(response.json()["deployments"][0])
            assert data["status"] == "READY"
            assert fake.statuses(sha)
            assert not fake.unmatched
    finally:
        fake.stop()


def test_github_outage_ends_as_error_not_failure(make_service) -> None:  # type: ignore[no-untyped-def]
    import tasks.pipeline as pipeline

    service: Service = make_service()
    original = pipeline.BACKOFF_SECONDS
    pipeline.BACKOFF_SECONDS = (0, 0, 0)
    try:
        sha = sha_for("outage")
        service.fake.fail("GET", rf"/tarball/{sha}", 502, times=10)
        data = service.wait(service.push(sha, tiny_site()))
    finally:
        pipeline.BACKOFF_SECONDS = original
    assert data["status"] == "FAILED" and data["outcome"] == "error"
    assert "502" in data["reason"]
    statuses = service.fake.statuses(sha)
    assert statuses[-1]["state"] == "error"
    assert "not your code" in statuses[-1]["description"]
    assert len(service.fake.requests("GET", rf"/tarball/{sha}")) == pipeline.MAX_ATTEMPTS


def test_transient_github_fault_is_retried_and_succeeds(make_service) -> None:  # type: ignore[no-untyped-def]
    import tasks.pipeline as pipeline

    service: Service = make_service()
    original = pipeline.BACKOFF_SECONDS
    pipeline.BACKOFF_SECONDS = (0, 0, 0)
    try:
        sha = sha_for("blip")
        service.fake.fail("GET", rf"/tarball/{sha}", 503, times=1)
        data = service.wait(service.push(sha, {"index.html": "after a blip"}))
    finally:
        pipeline.BACKOFF_SECONDS = original
    assert data["status"] == "READY"
    assert [s["state"] for s in service.fake.statuses(sha)][-1] == "success"
    assert len(service.fake.check_runs) == 1
