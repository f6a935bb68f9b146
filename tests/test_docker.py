"""The Docker builder and container previews, against a real engine and registry on loopback."""

from __future__ import annotations

import gzip
import io
import json
import socket
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from cryptography.fernet import Fernet

import models
from builders.base import BuildContext
from builders.config import parse_config
from builders.docker import BuildProgress, DockerBuilder, image_tag
from builders.log import BuildLog
from builders.registry import registry_auth, save_registry_credential
from builders.runner import CommandRunner
from core.errors import BuildCancelled, RegistryError
from core.settings import Settings
from models import Deployment
from tests.conftest import Service, require, wait_for
from tests.dockerinfra import DockerInfra, missing_tools
from tests.payloads import REPO, sha_for
from web import containers
from web.containers import choose_port, stop_preview

OWNER = REPO.split("/")[0]
SITE_PAGE = "<!doctype html><title>Widgets</title><h1>Hello from a container</h1>"


def httpd_app(base: str, *, page: str = SITE_PAGE, config: str = "") -> dict[str, str | bytes]:
    """A busybox httpd serving one page on 127.0.0.1:$PORT."""
    files: dict[str, str | bytes] = {
        "Dockerfile": (
            f"FROM {base}\n"
            "COPY www /www\n"
            "EXPOSE 8080\n"
            'CMD ["sh", "-c", "echo serving on $PORT; exec httpd -f -vv -p 127.0.0.1:$PORT -h /www"]\n'
        ),
        "www/index.html": page,
    }
    if config:
        files["dyonisus.yml"] = config
    return files


@pytest.fixture(scope="session")
def docker_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerInfra]:
    missing = missing_tools()
    require(not missing, "the Docker tests need " + ", ".join(missing))
    infra = DockerInfra.start(tmp_path_factory.mktemp("docker"))
    yield infra
    containers.close_previews()
    infra.stop()


@pytest.fixture
def infra(docker_infra: DockerInfra) -> Iterator[DockerInfra]:
    """The session's engine, with no container left once the test is over."""
    yield docker_infra
    docker_infra.engine.remove_all_containers()


@pytest.fixture
def engine(infra: DockerInfra) -> Iterator[docker.APIClient]:
    with infra.engine.client() as client:
        yield client


def docker_service(make_service: Callable[..., Service], infra: DockerInfra, **overrides: Any) -> Service:
    return make_service(docker_host=infra.engine.docker_host, **overrides)


def registry_service(make_service: Callable[..., Service], infra: DockerInfra, **overrides: Any) -> Service:
    """Registry mode, logging in with REGISTRY_USERNAME/REGISTRY_PASSWORD."""
    login = {"registry_username": infra.registry.username, "registry_password": infra.registry.password}
    return docker_service(make_service, infra, registry_url=infra.registry.url, **(login | overrides))


def preview_containers(client: docker.APIClient, deployment_id: str) -> list[dict[str, Any]]:
    rows = client.containers(all=True, filters={"label": f"{containers.LABEL_PREVIEW}={deployment_id}"})
    return list(rows)


# -- pure parts ----------------------------------------------------------------


def test_image_tags_are_lower_case_and_name_the_registry() -> None:
    sha = sha_for("tag").upper()
    assert image_tag(REPO, sha, registry="127.0.0.1:5000") == f"127.0.0.1:5000/codertocat-hello-world:{sha.lower()}"
    assert image_tag(REPO, sha, registry=None) == f"dyonisus/codertocat-hello-world:{sha.lower()}"
    assert image_tag("octo-org/.github", "abc", registry=None) == "dyonisus/octo-org-github:abc"


def test_build_progress_names_the_failing_step() -> None:
    # Events as the engine's classic builder sends them (recorded from Docker 20.10).
    events: list[dict[str, Any]] = [
        {"stream": "Step 1/3 : FROM local/busybox:1"},
        {"stream": "\n"},
        {"stream": " ---> 6b443436bf81\n"},
        {"stream": "Step 2/3 : RUN echo hello && echo oops >&2 && exit 7"},
        {"stream": "\n"},
        {"stream": " ---> Running in 4eb17d1c1c7c\n"},
        {"stream": "hello\n"},
        {"stream": "\x1b[91moops\n\x1b[0m"},
    ]
    progress = BuildProgress()
    for event in events[:3]:
        progress.feed(event)
    assert progress.can_stop and progress.layer == "6b443436bf81"
    progress.feed(events[3])
    progress.feed(events[4])
    # A RUN step's container may exist before the engine names it: a stop waits for the name.
    assert not progress.can_stop and progress.parent == "6b443436bf81"
    progress = BuildProgress()
    lines = [line for event in events for line in progress.feed(event)]
    assert progress.can_stop
    assert "Step 2/3 : RUN echo hello && echo oops >&2 && exit 7" in lines
    assert "oops" in lines and not any("\x1b" in line for line in lines)
    assert progress.container == "4eb17d1c1c7c"
    assert progress.step_output == ["hello", "oops"]
    progress.feed({"stream": "Removing intermediate container 4eb17d1c1c7c\n"})
    assert progress.container is None
    message = "The command '/bin/sh -c echo hello && echo oops >&2 && exit 7' returned a non-zero code: 7"
    progress.feed({"errorDetail": {"code": 7, "message": message}, "error": message})
    assert progress.failure_reason() == f"`Step 2/3 : RUN echo hello && echo oops >&2 && exit 7` failed: {message}"
    assert progress.feed({"aux": {"ID": "sha256:" + "a" * 64}}) == [] and progress.image_id == "sha256:" + "a" * 64


def test_preview_port_prefers_config_then_free_exposed_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert choose_port({"port": taken, "exposed_port": 8080}, set()) == taken
        assert choose_port({"port": None, "exposed_port": taken}, set()) != taken
    free = containers.any_free_port()
    assert choose_port({"exposed_port": free}, set()) == free
    assert choose_port({"exposed_port": free}, {free}) != free
    assert choose_port({}, set()) > 0


def test_registry_login_prefers_the_owners_encrypted_credential(tmp_path: Path) -> None:
    database = models.connect(f"sqlite:///{tmp_path}/credentials.db")
    models.create_schema()
    try:
        check_registry_logins()
    finally:
        database.close()


def check_registry_logins() -> None:
    key = Fernet.generate_key().decode()
    settings = Settings(
        registry_url="127.0.0.1:5000", registry_username="env-user", registry_password="env-pass", encryption_key=key
    )
    assert registry_auth(settings, owner=OWNER) == {
        "username": "env-user",
        "password": "env-pass",
        "serveraddress": "127.0.0.1:5000",
    }
    row = save_registry_credential(settings, owner=OWNER, username="owner-user", password="owner-pass")
    assert "owner-pass" not in row.encrypted_data
    assert registry_auth(settings, owner=OWNER) == {
        "username": "owner-user",
        "password": "owner-pass",
        "serveraddress": "127.0.0.1:5000",
    }
    assert registry_auth(settings, owner="someone-else")["username"] == "env-user"  # type: ignore[index]
    other_key = Settings(registry_url="127.0.0.1:5000", encryption_key=Fernet.generate_key().decode())
    with pytest.raises(RegistryError, match="cannot be decrypted"):
        registry_auth(other_key, owner=OWNER)
    assert registry_auth(Settings(registry_url="127.0.0.1:5000"), owner=OWNER) is None


# -- end to end through the webhook ---------------------------------------------


def test_image_is_built_pushed_and_served_as_a_preview(
    make_service: Callable[..., Service], infra: DockerInfra, engine: docker.APIClient
) -> None:
    key = Fernet.generate_key().decode()
    service = docker_service(make_service, infra, registry_url=infra.registry.url, encryption_key=key)
    # The registry asks for a password; here only the owner's stored credential knows it.
    save_registry_credential(
        service.settings, owner=OWNER, username=infra.registry.username, password=infra.registry.password
    )
    sha = sha_for("docker-push")
    files = httpd_app(infra.base_image, config="memory: 64m\ncpus: 0.5\n")
    deployment_id = service.push(sha, files)
    data = service.wait(deployment_id)

    assert data["status"] == "READY", data
    assert data["provider"] == "docker" and data["artifactUrl"] is None
    assert [s["state"] for s in service.fake.statuses(sha)] == ["pending", "success"]
    tag = f"{infra.registry.url}/codertocat-hello-world:{sha}"
    meta = Deployment.get_by_id(deployment_id).provider_meta
    assert meta["image"] == tag and meta["exposed_port"] == 8080
    assert meta["digest"].startswith("sha256:")
    assert infra.registry.manifest_digest("codertocat-hello-world", sha) == meta["digest"]
    labels = engine.inspect_image(tag)["Config"]["Labels"]
    assert labels == {"dyonisus.repository": REPO, "dyonisus.commit": sha, "dyonisus.deployment": deployment_id}
    with service.http() as client:
        log = client.get(f"/api/deploy/{deployment_id}/logs").text
    assert "Step 1/" in log and "COPY www /www" in log and "pushing " + tag in log
    assert infra.registry.password not in log

    page = service.preview(deployment_id)
    assert page.status_code == 200, page.text
    assert "Hello from a container" in page.text
    assert page.headers["X-Dyonisus-Deployment"] == deployment_id
    assert service.preview(deployment_id, "/missing.html").status_code == 404
    (row,) = preview_containers(engine, deployment_id)
    details = engine.inspect_container(row["Id"])
    port = details["Config"]["Labels"][containers.LABEL_PORT]
    assert f"PORT={port}" in details["Config"]["Env"]
    host = details["HostConfig"]
    assert host["NetworkMode"] == "host" and host["Memory"] == 64 * 1024**2 and host["NanoCpus"] == 500_000_000

    # Stopped (an alias moved on), then started again by the next request.
    assert stop_preview(deployment_id, settings=service.settings) is True
    assert preview_containers(engine, deployment_id) == []
    assert "Hello from a container" in service.preview(deployment_id).text

    # An engine without the image (another host, a pruned cache) pulls it from the registry.
    assert stop_preview(deployment_id, settings=service.settings) is True
    engine.remove_image(meta["image_id"], force=True)
    assert not engine.images(name=tag)
    assert "Hello from a container" in service.preview(deployment_id).text
    assert engine.inspect_image(meta["image_id"])["RepoDigests"] == [
        f"{infra.registry.url}/codertocat-hello-world@{meta['digest']}"
    ]


def test_without_a_registry_the_saved_image_is_the_artifact(
    make_service: Callable[..., Service], infra: DockerInfra, engine: docker.APIClient
) -> None:
    service = docker_service(make_service, infra)
    sha = sha_for("docker-save")
    deployment_id = service.push(sha, httpd_app(infra.base_image, page="<h1>saved image</h1>"))
    data = service.wait(deployment_id)
    assert data["status"] == "READY", data
    with service.http() as client:
        artifact = client.get(f"/api/deploy/{deployment_id}/artifact").content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(artifact))) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [f"dyonisus/codertocat-hello-world:{sha}"]
    assert "saved image" in service.preview(deployment_id).text

    # With the image gone from the engine, the preview loads it from the stored artifact.
    stop_preview(deployment_id, settings=service.settings)
    engine.remove_image(f"dyonisus/codertocat-hello-world:{sha}", force=True)
    assert "saved image" in service.preview(deployment_id).text


def test_failing_run_reports_the_step_and_its_output(make_service: Callable[..., Service], infra: DockerInfra) -> None:
    service = docker_service(make_service, infra)
    sha = sha_for("docker-failing-run")
    files: dict[str, str | bytes] = {
        "Dockerfile": (
            f"FROM {infra.base_image}\n"
            "RUN echo compiling widgets\n"
            "RUN echo 'linking widgets' && echo 'fatal: widget.h not found' >&2 && exit 7\n"
            'CMD ["true"]\n'
        )
    }
    data = service.wait(service.push(sha, files))

    assert data["status"] == "FAILED" and data["outcome"] == "failure", data
    assert "exit 7" in data["reason"] and "Step 3/" in data["reason"] and "non-zero code: 7" in data["reason"]
    assert [s["state"] for s in service.fake.statuses(sha)] == ["pending", "failure"]
    (run,) = service.fake.check_runs.values()
    assert run["conclusion"] == "failure"
    assert "RUN echo 'linking widgets'" in run["output"]["summary"]
    text = run["output"]["text"]
    assert "linking widgets" in text and "fatal: widget.h not found" in text and "compiling widgets" in text


def test_build_over_its_time_limit_is_stopped_in_the_engine(
    make_service: Callable[..., Service], infra: DockerInfra, engine: docker.APIClient
) -> None:
    service = docker_service(make_service, infra)
    sha = sha_for("docker-timeout")
    files: dict[str, str | bytes] = {
        "Dockerfile": f"FROM {infra.base_image}\nRUN echo napping && sleep 30 && echo woke-up-$((40 + 2))\n",
        "dyonisus.yml": "timeout: 2\n",
    }
    before = {row["Id"] for row in engine.containers(all=True)}
    started = time.monotonic()
    data = service.wait(service.push(sha, files))

    assert time.monotonic() - started < 20
    assert data["status"] == "FAILED" and data["outcome"] == "timed_out", data
    (run,) = service.fake.check_runs.values()
    assert run["conclusion"] == "timed_out"
    assert "napping" in run["output"]["text"] and "woke-up-42" not in run["output"]["text"]
    assert {row["Id"] for row in engine.containers(all=True)} == before
    assert not engine.images(name=f"dyonisus/codertocat-hello-world:{sha}")


def test_engine_unreachable_fails_docker_deployments_at_once_and_static_ones_still_work(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    missing = f"unix://{tmp_path}/no-engine/docker.sock"
    service = make_service(docker_host=missing)
    docker_sha, static_sha = sha_for("no-engine-docker"), sha_for("no-engine-static")
    docker_id = service.push(docker_sha, {"Dockerfile": "FROM scratch\n"})
    static_id = service.push(static_sha, {"index.html": "<h1>still static</h1>"})
    failed, ready = service.wait(docker_id, timeout=30), service.wait(static_id, timeout=30)

    assert failed["status"] == "FAILED" and failed["outcome"] == "error", failed
    assert "Docker engine is unreachable" in failed["reason"] and missing in failed["reason"]
    assert Deployment.get_by_id(docker_id).attempts == 1
    (status,) = [s for s in service.fake.statuses(docker_sha) if s["state"] != "pending"]
    assert status["state"] == "error" and "Docker engine is unreachable" in status["description"]
    assert ready["status"] == "READY"
    assert "still static" in service.preview(static_id).text
    assert stop_preview(static_id, settings=service.settings) is False


# -- container previews that do not answer ---------------------------------------


def test_crashing_container_answers_502_with_its_log(make_service: Callable[..., Service], infra: DockerInfra) -> None:
    service = registry_service(make_service, infra)
    files: dict[str, str | bytes] = {
        "Dockerfile": (
            f"FROM {infra.base_image}\n"
            'CMD ["sh", "-c", "echo starting widgets; echo \'panic: WIDGET_URL is not set\' >&2; exit 3"]\n'
        )
    }
    deployment_id = service.push(sha_for("docker-crash"), files)
    assert service.wait(deployment_id)["status"] == "READY"

    answer = service.preview(deployment_id)
    assert answer.status_code == 502
    assert "exited with code 3" in answer.text
    log_url = f"{service.settings.public_url}/api/deploy/{deployment_id}/container-log"
    assert f'href="{log_url}"' in answer.text
    with service.http() as client:
        log = client.get(f"/api/deploy/{deployment_id}/container-log")
        assert log.status_code == 200 and "panic: WIDGET_URL is not set" in log.text
        assert client.get(f"/api/deploy/{deployment_id}").json()["status"] == "READY"
    assert service.preview(deployment_id).status_code == 502


def test_container_that_never_opens_its_port_answers_502(
    make_service: Callable[..., Service], infra: DockerInfra, engine: docker.APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(containers, "STARTUP_SECONDS", 1.5)
    service = docker_service(make_service, infra)
    files: dict[str, str | bytes] = {
        "Dockerfile": f'FROM {infra.base_image}\nCMD ["sh", "-c", "echo thinking hard; sleep 60"]\n'
    }
    deployment_id = service.push(sha_for("docker-silent"), files)
    assert service.wait(deployment_id)["status"] == "READY"

    answer = service.preview(deployment_id)
    assert answer.status_code == 502 and "did not open 127.0.0.1:" in answer.text
    (row,) = preview_containers(engine, deployment_id)
    assert row["State"] != "running"
    with service.http() as client:
        assert "thinking hard" in client.get(f"/api/deploy/{deployment_id}/container-log").text


def test_idle_container_is_stopped_and_started_again(
    make_service: Callable[..., Service], infra: DockerInfra, engine: docker.APIClient
) -> None:
    service = docker_service(make_service, infra, preview_idle_timeout=1)
    deployment_id = service.push(sha_for("docker-idle"), httpd_app(infra.base_image))
    assert service.wait(deployment_id)["status"] == "READY"

    assert service.preview(deployment_id).status_code == 200
    assert len(preview_containers(engine, deployment_id)) == 1
    wait_for(lambda: not preview_containers(engine, deployment_id), timeout=10)
    assert service.preview(deployment_id).status_code == 200
    assert len(preview_containers(engine, deployment_id)) == 1


# -- the builder on its own ------------------------------------------------------


def builder_context(tmp_path: Path, files: dict[str, str], *, should_stop: Callable[[], bool]) -> BuildContext:
    source = tmp_path / "src"
    for name, text in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text, encoding="utf-8")
    return BuildContext(
        deployment_id="cbuildercontext0000000000",
        repository=REPO,
        commit_sha=sha_for(str(tmp_path)),
        source_dir=source,
        work_dir=tmp_path,
        config=parse_config(files.get("dyonisus.yml")),
        log=BuildLog(tmp_path / "build.log"),
        runner=CommandRunner(),
        env={},
        deadline=time.monotonic() + 60,
        should_stop=should_stop,
    )


def test_cancelled_build_leaves_no_container(tmp_path: Path, infra: DockerInfra, engine: docker.APIClient) -> None:
    context = builder_context(
        tmp_path,
        {"Dockerfile": f"FROM {infra.base_image}\nRUN echo waiting && sleep 30\n"},
        should_stop=lambda: "waiting" in (tmp_path / "build.log").read_text(encoding="utf-8"),
    )
    builder = DockerBuilder(Settings(docker_host=infra.engine.docker_host))
    before = {row["Id"] for row in engine.containers(all=True)}
    started = time.monotonic()
    try:
        with pytest.raises(BuildCancelled):
            builder.build(context)
    finally:
        context.log.close()
    assert time.monotonic() - started < 15
    assert {row["Id"] for row in engine.containers(all=True)} == before
    assert "stopped: the deployment was cancelled" in (tmp_path / "build.log").read_text(encoding="utf-8")


def test_push_refused_by_the_registry_is_a_registry_error(tmp_path: Path, infra: DockerInfra) -> None:
    context = builder_context(tmp_path, {"Dockerfile": f"FROM {infra.base_image}\n"}, should_stop=lambda: False)
    settings = Settings(
        docker_host=infra.engine.docker_host,
        registry_url=infra.registry.url,
        registry_username=infra.registry.username,
        registry_password="not-the-password",
    )
    try:
        with pytest.raises(RegistryError, match="unauthorized"):
            DockerBuilder(settings).build(context)
    finally:
        context.log.close()


def test_container_stops_when_the_alias_moves_on_and_when_the_pr_closes(
    make_service: Callable[..., Service], infra: DockerInfra, engine: docker.APIClient
) -> None:
    from core.aliases import branch_alias, pr_alias
    from tests.payloads import pr_payload

    service = docker_service(make_service, infra)
    first = service.push(sha_for("alias-1"), httpd_app(infra.base_image, page="<h1>one</h1>"), branch="feature")
    assert service.wait(first)["status"] == "READY"
    alias = branch_alias(OWNER, "Hello-World", "feature")
    assert "one" in service.preview(alias).text
    assert len(preview_containers(engine, first)) == 1

    second = service.push(sha_for("alias-2"), httpd_app(infra.base_image, page="<h1>two</h1>"), branch="feature")
    assert service.wait(second)["status"] == "READY"
    wait_for(lambda: not preview_containers(engine, first), timeout=20)
    assert "two" in service.preview(alias).text

    head = sha_for("pr-container")
    service.fake.add_tarball(REPO, head, httpd_app(infra.base_image, page="<h1>pr</h1>"))
    opened = service.send("pull_request", pr_payload("opened", head_sha=head, head_ref="widgets"))
    (pr_deployment,) = opened.json()["deployments"]
    assert service.wait(pr_deployment)["status"] == "READY"
    assert "pr" in service.preview(pr_alias(OWNER, "Hello-World", 2)).text
    assert len(preview_containers(engine, pr_deployment)) == 1
    service.send("pull_request", pr_payload("closed", head_sha=head, head_ref="widgets"))
    wait_for(lambda: not preview_containers(engine, pr_deployment), timeout=20)
