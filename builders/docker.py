"""Docker images: built by the engine at DOCKER_HOST, pushed to REGISTRY_URL or saved as the artifact."""

from __future__ import annotations

import gzip
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
import urllib3
from docker.errors import APIError, DockerException, NotFound

from builders.base import BuildContext, BuildOutput, require_folder
from builders.registry import registry_auth
from core.errors import BuildCancelled, BuildFailed, BuildTimedOut, DeployError, EngineUnavailable, RegistryError
from core.settings import Settings

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
LOCAL_REPOSITORY_PREFIX = "dyonisus"
LABEL_REPOSITORY = "dyonisus.repository"
LABEL_COMMIT = "dyonisus.commit"
LABEL_DEPLOYMENT = "dyonisus.deployment"
# Streams (build, push, save) block in socket reads; the build loop looks at its limits this often.
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10.0
# A stop asked for while a RUN step's container is being made waits (this long at most) until
# the engine names it: cut before that, the engine would leave it behind for a moment.
STOP_SETTLE_SECONDS = 3.0
# Requests other than the build stream itself (which has no read timeout: a RUN may be silent).
ENGINE_TIMEOUT_SECONDS = 120
PROBE_TIMEOUT_SECONDS = 5.0
STEP_OUTPUT_LINES = 200
TIMEOUT_REASON = "the build ran over its time limit"
STEP_LINE = re.compile(r"^Step \d+/\d+ : ")
RUNNING_IN = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})\s*$")
LAYER_LINE = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
QUIET_PUSH_STATES = ("Preparing", "Waiting", "Pushing")

_api_versions: dict[str, str] = {}


def repository_slug(repository: str) -> str:
    """`owner/repo` as one lower-case image name component: `owner-repo`."""
    return re.sub(r"[^a-z0-9]+", "-", repository.lower()).strip("-")


def image_tag(repository: str, commit_sha: str, *, registry: str | None) -> str:
    """`<registry>/<owner>-<repo>:<sha>`, or `dyonisus/<owner>-<repo>:<sha>` with no registry."""
    prefix = registry.rstrip("/").lower() if registry else LOCAL_REPOSITORY_PREFIX
    return f"{prefix}/{repository_slug(repository)}:{commit_sha.lower()}"


def unreachable(address: str, detail: object) -> str:
    return f"the Docker engine is unreachable at {address}: {detail}"


class EngineClient(docker.APIClient):
    """The SDK's low-level client, keeping the HTTP response of the stream it opened last.

    A streamed answer (build, push, pull, save) blocks in a socket read; shutting that socket
    down is the one way to end it from another thread, and the engine cancels a build whose
    client went away: it kills and removes the step's container.
    """

    address: str = DEFAULT_DOCKER_HOST
    streaming: requests.Response | None = None

    def _stream_helper(self, response: requests.Response, decode: bool = False) -> Any:
        self.streaming = response
        return super()._stream_helper(response, decode=decode)

    def _stream_raw_result(self, response: requests.Response, *args: Any, **kwargs: Any) -> Any:
        self.streaming = response
        return super()._stream_raw_result(response, *args, **kwargs)

    def abort_stream(self) -> None:
        """Cut the connection of the current stream, waking the thread that reads it."""
        response = self.streaming
        connection = getattr(response.raw, "connection", None) if response is not None else None
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close_stream(self) -> None:
        if self.streaming is not None:
            self.streaming.close()
            self.streaming = None


def _probe_unix_socket(address: str) -> None:
    path = address.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT_SECONDS)
        try:
            probe.connect(path)
        except OSError as error:
            raise EngineUnavailable(unreachable(address, error.strerror or error)) from None


def connect_engine(docker_host: str | None) -> EngineClient:
    """A client of the engine at docker_host (the default socket when None); EngineUnavailable if none answers."""
    address = docker_host or DEFAULT_DOCKER_HOST
    if address.startswith("unix://"):
        _probe_unix_socket(address)
    try:
        client = EngineClient(
            base_url=address, version=_api_versions.get(address, "auto"), timeout=ENGINE_TIMEOUT_SECONDS
        )
    except DockerException as error:
        raise EngineUnavailable(unreachable(address, error)) from None
    client.address = address
    _api_versions[address] = client.api_version
    return client


@contextmanager
def engine(docker_host: str | None) -> Iterator[EngineClient]:
    """connect_engine() for a block: a connection fault inside it becomes EngineUnavailable."""
    client = connect_engine(docker_host)
    try:
        yield client
    except requests.exceptions.ConnectionError as error:
        raise EngineUnavailable(unreachable(client.address, error)) from None
    finally:
        client.close_stream()
        client.close()


@dataclass
class BuildProgress:
    """What a build's event stream said so far; fed one decoded event at a time (pure)."""

    step: str | None = None
    step_output: list[str] = field(default_factory=list)
    container: str | None = None
    # Whether the current step's container was named (`Running in …`).
    step_had_container: bool = False
    # The image the current step starts from: the engine makes the step's container from it.
    parent: str | None = None
    layer: str | None = None
    image_id: str | None = None
    error: str | None = None
    _partial: str = ""

    def feed(self, event: dict[str, Any]) -> list[str]:
        """Take one event; return the log lines it completed."""
        if event.get("error") or event.get("errorDetail"):
            detail = event.get("errorDetail") or {}
            self.error = str(detail.get("message") or event.get("error")).strip()
            return self.flush()
        aux = event.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        if isinstance(event.get("status"), str):
            return [status_line(event)]
        text = event.get("stream")
        if not isinstance(text, str):
            return []
        *lines, self._partial = (self._partial + ANSI_ESCAPE.sub("", text)).replace("\r\n", "\n").split("\n")
        for line in lines:
            self._note(line)
        return lines

    def flush(self) -> list[str]:
        """The last line if the stream ended without a newline."""
        line, self._partial = self._partial, ""
        if not line:
            return []
        self._note(line)
        return [line]

    def _note(self, line: str) -> None:
        if STEP_LINE.match(line):
            self.step, self.step_output, self.container, self.parent = line.strip(), [], None, self.layer
            self.step_had_container = False
        elif match := RUNNING_IN.match(line):
            self.container, self.step_had_container = match[1], True
        elif match := LAYER_LINE.match(line):
            self.layer = match[1]
        elif line.startswith("Removing intermediate container"):
            self.container = None
        elif not line.startswith(" ---> "):
            self.step_output = [*self.step_output[-(STEP_OUTPUT_LINES - 1) :], line]

    @property
    def can_stop(self) -> bool:
        """False while a RUN step's container may exist without the engine having named it."""
        instruction = (self.step or "").partition(" : ")[2].lstrip().upper()
        return self.step_had_container or not instruction.startswith("RUN")

    def failure_reason(self) -> str:
        where = f"`{self.step}`" if self.step else "the build"
        return f"{where} failed: {self.error}"


def status_line(event: dict[str, Any]) -> str:
    """A progress event (pull, push) as one log line, without its progress bar."""
    status = str(event.get("status", ""))
    return f"{event['id']}: {status}" if event.get("id") else status


def _read_events(events: Iterator[dict[str, Any]], inbox: queue.Queue[tuple[str, Any]]) -> None:
    try:
        for event in events:
            inbox.put(("event", event))
    except (APIError, requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        inbox.put(("fault", error))
    finally:
        inbox.put(("end", None))


def limit_reached(context: BuildContext) -> BuildTimedOut | BuildCancelled | None:
    if time.monotonic() >= context.deadline:
        return BuildTimedOut(TIMEOUT_REASON)
    if context.should_stop():
        return BuildCancelled("cancelled")
    return None


def check_limits(context: BuildContext) -> None:
    """BuildTimedOut past the deadline, BuildCancelled once should_stop() is true."""
    if stop := limit_reached(context):
        raise stop


def follow(
    client: EngineClient,
    events: Iterator[dict[str, Any]],
    context: BuildContext,
    handle: Callable[[dict[str, Any]], None],
    *,
    refused: Callable[[APIError], DeployError],
    on_stop: Callable[[], None] = lambda: None,
    can_stop: Callable[[], bool] = lambda: True,
) -> None:
    """Feed a stream's events to handle() until it ends, obeying the build's limits.

    A timed-out or cancelled build cuts the stream once can_stop() is true (at most
    STOP_SETTLE_SECONDS later), lets on_stop() clean up in the engine, and raises
    BuildTimedOut or BuildCancelled.
    """
    inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
    reader = threading.Thread(target=_read_events, args=(events, inbox), name="docker-stream", daemon=True)
    reader.start()
    stop: BuildTimedOut | BuildCancelled | None = None
    settle_until = 0.0
    try:
        while True:
            try:
                kind, item = inbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                kind, item = "wait", None
            if kind == "event":
                handle(item)
            elif kind == "fault" and isinstance(item, APIError):
                raise refused(item)
            elif kind == "fault":
                raise EngineUnavailable(unreachable(client.address, f"the stream broke: {item}"))
            elif kind == "end" and stop is None:
                return
            if stop is None and (stop := limit_reached(context)):
                settle_until = time.monotonic() + STOP_SETTLE_SECONDS
            if stop is not None and (kind == "end" or can_stop() or time.monotonic() >= settle_until):
                raise stop
    except (BuildTimedOut, BuildCancelled) as stopped:
        why = str(stopped) if isinstance(stopped, BuildTimedOut) else "the deployment was cancelled"
        context.log.step(f"stopped: {why}")
        client.abort_stream()
        reader.join(STOP_GRACE_SECONDS)
        on_stop()
        raise
    finally:
        reader.join(STOP_GRACE_SECONDS)
        client.close_stream()


def step_containers(client: EngineClient, progress: BuildProgress, before: set[str]) -> list[dict[str, Any]]:
    """Containers made since the build began for its current step (its container may be too new to be named)."""

    def of_step(row: dict[str, Any]) -> bool:
        if progress.container and str(row["Id"]).startswith(progress.container):
            return True
        image = str(row.get("ImageID") or "").removeprefix("sha256:")
        return bool(progress.parent) and image.startswith(str(progress.parent))

    return [row for row in client.containers(all=True) if row["Id"] not in before and of_step(row)]


def remove_build_containers(client: EngineClient, progress: BuildProgress, before: set[str]) -> None:
    """Return once a stopped build has left no container behind in the engine.

    The engine kills and removes the step's container itself when the build's client goes
    away; one the build named (`Running in …`) is removed here if the engine has not done so
    within STOP_GRACE_SECONDS.
    """
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while left := step_containers(client, progress, before):
        if time.monotonic() >= deadline:
            for row in left:
                if progress.container and str(row["Id"]).startswith(progress.container):
                    with suppress(NotFound):
                        client.remove_container(row["Id"], force=True)
            return
        time.sleep(POLL_SECONDS)


def build_image(client: EngineClient, context: BuildContext, tag: str, *, project_dir: Path) -> str:
    """Run the build, streaming its output into the log; returns the image id."""
    config = context.config
    progress = BuildProgress()
    before = {str(row["Id"]) for row in client.containers(all=True)}

    def handle(event: dict[str, Any]) -> None:
        for line in progress.feed(event):
            context.log.line(line)

    try:
        # The SDK's build is the engine's classic builder, which honours network_mode for RUN.
        events = client.build(
            path=str(project_dir),
            dockerfile=config.dockerfile,
            tag=tag,
            buildargs=dict(config.build_args),
            target=config.target,
            network_mode="host" if config.network == "host" else "none",
            labels={
                LABEL_REPOSITORY: context.repository,
                LABEL_COMMIT: context.commit_sha,
                LABEL_DEPLOYMENT: context.deployment_id,
            },
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
    except requests.exceptions.ConnectionError as error:
        raise EngineUnavailable(unreachable(client.address, error)) from None
    except (OSError, DockerException) as error:
        raise BuildFailed(f"the build context cannot be packed for the engine: {error}") from None
    follow(
        client,
        events,
        context,
        handle,
        refused=lambda error: BuildFailed(f"the engine refused the build: {error.explanation or error}"),
        on_stop=lambda: remove_build_containers(client, progress, before),
        can_stop=lambda: progress.can_stop,
    )
    for line in progress.flush():
        context.log.line(line)
    if progress.error:
        context.log.step(f"failed at {progress.step or 'the start of the build'}")
        raise BuildFailed(progress.failure_reason())
    return progress.image_id or str(client.inspect_image(tag)["Id"])


def push_image(client: EngineClient, tag: str, context: BuildContext, auth: dict[str, str] | None) -> str:
    """Push tag to its registry; returns the manifest digest the registry reported."""
    repository, _, name_tag = tag.rpartition(":")
    context.log.step(f"pushing {tag}")
    result: dict[str, str] = {}

    def handle(event: dict[str, Any]) -> None:
        if event.get("error") or event.get("errorDetail"):
            result["error"] = str((event.get("errorDetail") or {}).get("message") or event.get("error"))
        aux = event.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
            result["digest"] = aux["Digest"]
        if isinstance(event.get("status"), str) and event["status"] not in QUIET_PUSH_STATES:
            context.log.line(status_line(event))

    try:
        events = client.push(repository, tag=name_tag, stream=True, decode=True, auth_config=auth)
    except APIError as error:
        raise RegistryError(f"the engine refused the push of {tag}: {error.explanation or error}") from None
    follow(client, events, context, handle, refused=lambda error: RegistryError(f"the push of {tag} failed: {error}"))
    if "error" in result:
        raise RegistryError(f"the registry refused the push of {tag}: {result['error']}")
    if "digest" not in result:
        raise RegistryError(f"the registry reported no digest for {tag}")
    return result["digest"]


def save_image(client: EngineClient, tag: str, destination: Path, context: BuildContext) -> Path:
    """`docker save` of tag, gzip-compressed, into destination."""
    context.log.step(f"saving {tag} as the artifact (docker save, gzip)")
    try:
        with gzip.open(destination, "wb", compresslevel=6) as archive:
            for chunk in client.get_image(tag):
                archive.write(chunk)
                check_limits(context)
    finally:
        client.close_stream()
    return destination


def exposed_port(image: dict[str, Any]) -> int | None:
    """The lowest TCP port an image EXPOSEs (from `docker inspect`), None when it exposes none."""
    ports = (image.get("Config") or {}).get("ExposedPorts") or {}
    numbers = [int(name.split("/")[0]) for name in ports if name.endswith("/tcp") and name.split("/")[0].isdigit()]
    return min(numbers) if numbers else None


class DockerBuilder:
    name = "docker"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, context: BuildContext) -> BuildOutput:
        project_dir = require_folder(context.project_dir, "the root folder")
        config = context.config
        if not (project_dir / config.dockerfile).is_file():
            raise BuildFailed(f"the dockerfile {config.dockerfile!r} does not exist in the repository")
        registry = self.settings.registry_url
        tag = image_tag(context.repository, context.commit_sha, registry=registry)
        auth = registry_auth(self.settings, owner=context.repository.split("/")[0]) if registry else None
        context.log.step(f"docker build of {config.dockerfile} as {tag} (network: {config.network})")
        with engine(self.settings.docker_host) as client:
            image_id = build_image(client, context, tag, project_dir=project_dir)
            meta: dict[str, Any] = {
                "image": tag,
                "image_id": image_id,
                "registry": registry,
                "digest": None,
                "exposed_port": exposed_port(client.inspect_image(image_id)),
                "port": config.port,
                "memory": config.memory,
                "cpus": config.cpus,
            }
            artifact = None
            if registry:
                meta["digest"] = push_image(client, tag, context, auth)
            else:
                artifact = save_image(client, tag, context.work_dir / "image.tar.gz", context)
        context.log.step(f"image {image_id[:19]} ready" + (f", pushed as {meta['digest']}" if meta["digest"] else ""))
        return BuildOutput(artifact=artifact, provider_meta=meta)
