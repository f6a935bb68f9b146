"""Container previews: a READY Docker deployment runs on demand, and its preview host proxies to it."""

from __future__ import annotations

import hashlib
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from docker.errors import APIError, NotFound
from flask import Blueprint, Response, abort, current_app, jsonify, request
from markupsafe import escape

from builders.docker import EngineClient, engine
from builders.registry import registry_auth
from core.errors import DeployError, EngineUnavailable, RegistryError, StorageError
from core.settings import Settings
from models import Deployment
from tasks.runtime import current
from web.urls import api_url, details_url

log = logging.getLogger(__name__)

LABEL_PREVIEW = "dyonisus.preview"
LABEL_INSTANCE = "dyonisus.instance"
LABEL_PORT = "dyonisus.port"
# How long a new container may take to accept connections on its port.
STARTUP_SECONDS = 20.0
# A container that crashed is shown as crashed (502) this long before a request starts it anew.
CRASH_RETRY_SECONDS = 30.0
PROXY_TIMEOUT_SECONDS = 60.0
TOUCH_EVERY_SECONDS = 1.0
POLL_SECONDS = 0.1
LOG_TAIL_LINES = 2000
ENGINE_FAILURES_BEFORE_REAPER_RESTS = 3
REAPER_JOIN_SECONDS = 10.0
# https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1: these apply to one connection only.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

blueprint = Blueprint("containers", __name__)


class ContainerFailed(DeployError):
    """The preview's container exited, or never opened its port."""


def instance_key(settings: Settings) -> str:
    """Tells this instance's containers from those of another one sharing the engine."""
    return hashlib.sha256(f"{settings.database_url}|{settings.storage_url}".encode()).hexdigest()[:12]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def choose_port(meta: dict[str, Any], taken: set[int]) -> int:
    """The config's port; else the image's exposed port when free; else any free loopback port.

    Containers share the host's network (the engine has no bridge), so two previews must not
    want one port: the app learns its port from the PORT variable.
    """
    if meta.get("port"):
        return int(meta["port"])
    exposed = meta.get("exposed_port")
    if exposed and int(exposed) not in taken and port_free(int(exposed)):
        return int(exposed)
    while (port := any_free_port()) in taken:
        pass
    return port


class PreviewContainers:
    """The preview containers of one service instance: started on demand, removed when idle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = instance_key(settings)
        self.activity_dir = settings.cache_dir.resolve() / "containers" / self.instance
        self.sweep_seconds = max(0.5, min(30.0, settings.preview_idle_timeout / 4))
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._ports = threading.Lock()
        self._failed_at: dict[str, float] = {}
        self._failures: dict[str, str] = {}
        self._touched: dict[str, float] = {}
        self._reaper: threading.Thread | None = None
        self._started_since_sweep = False
        self._closed = threading.Event()

    def name(self, deployment_id: str) -> str:
        return f"dyonisus-preview-{self.instance}-{deployment_id}"

    def _lock(self, deployment_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(deployment_id, threading.Lock())

    # -- starting ------------------------------------------------------------
    def ensure_running(self, deployment: Deployment) -> int:
        """The loopback port of the deployment's running container, started if need be."""
        with self._lock(deployment.id), engine(self.settings.docker_host) as client:
            port = self._running_port(client, deployment.id)
            if port is None:
                port = self._start(client, deployment)
        self._watch()
        return port

    def _running_port(self, client: EngineClient, deployment_id: str) -> int | None:
        try:
            info = client.inspect_container(self.name(deployment_id))
        except NotFound:
            return None
        port = int(info["Config"]["Labels"][LABEL_PORT])
        if info["State"]["Running"]:
            if not port_open(port):
                self._wait_for_port(client, deployment_id, info["Id"], port)
            return port
        failed_at = self._failed_at.setdefault(deployment_id, time.monotonic())
        if time.monotonic() - failed_at < CRASH_RETRY_SECONDS:
            raise ContainerFailed(self._failures.get(deployment_id) or _exit_reason(info["State"], port))
        client.remove_container(info["Id"], force=True)
        self._forget_failure(deployment_id)
        return None

    def _start(self, client: EngineClient, deployment: Deployment) -> int:
        meta: dict[str, Any] = deployment.provider_meta or {}
        image = self._ensure_image(client, deployment, meta)
        with self._ports:
            port = choose_port(meta, self._ports_in_use(client))
            container_id = self._create(client, deployment.id, image, port, meta)
        client.start(container_id)
        log.info("started the preview container of %s on 127.0.0.1:%d", deployment.id, port)
        self._forget_failure(deployment.id)
        with self._guard:
            self._started_since_sweep = True
        self._wait_for_port(client, deployment.id, container_id, port)
        return port

    def _create(self, client: EngineClient, deployment_id: str, image: str, port: int, meta: dict[str, Any]) -> str:
        cpus = meta.get("cpus")
        host_config = client.create_host_config(
            # No bridge on the engine: the host's network, with the app bound to 127.0.0.1:$PORT.
            network_mode="host",
            mem_limit=meta.get("memory"),
            nano_cpus=int(float(cpus) * 1e9) if cpus else None,
            security_opt=["no-new-privileges"],
        )
        try:
            created = client.create_container(
                image=image,
                name=self.name(deployment_id),
                environment={"PORT": str(port), "HOST": "127.0.0.1"},
                labels={LABEL_PREVIEW: deployment_id, LABEL_INSTANCE: self.instance, LABEL_PORT: str(port)},
                host_config=host_config,
            )
        except APIError as error:
            raise ContainerFailed(f"the engine refused to create the container: {error.explanation or error}") from None
        return str(created["Id"])

    def _ports_in_use(self, client: EngineClient) -> set[int]:
        """Ports of every preview container on the engine, of this instance or another."""
        rows = client.containers(all=True, filters={"label": LABEL_PORT})
        return {int(row["Labels"][LABEL_PORT]) for row in rows if str(row["Labels"].get(LABEL_PORT, "")).isdigit()}

    def _wait_for_port(self, client: EngineClient, deployment_id: str, container_id: str, port: int) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not port_open(port):
            state = client.inspect_container(container_id)["State"]
            if not state["Running"]:
                raise self._failed(deployment_id, _exit_reason(state, port))
            if time.monotonic() >= deadline:
                # Stopped, not removed: its log stays readable from the 502 page.
                client.kill(container_id)
                raise self._failed(
                    deployment_id, f"the container did not open 127.0.0.1:{port} within {STARTUP_SECONDS:g} s"
                )
            time.sleep(POLL_SECONDS)

    def _failed(self, deployment_id: str, reason: str) -> ContainerFailed:
        self._failed_at[deployment_id] = time.monotonic()
        self._failures[deployment_id] = reason
        log.warning("the preview container of %s failed: %s", deployment_id, reason)
        return ContainerFailed(reason)

    def _forget_failure(self, deployment_id: str) -> None:
        self._failed_at.pop(deployment_id, None)
        self._failures.pop(deployment_id, None)

    # -- images --------------------------------------------------------------
    def _ensure_image(self, client: EngineClient, deployment: Deployment, meta: dict[str, Any]) -> str:
        """The image to run, pulled from the registry or loaded from the artifact when missing."""
        reference = meta.get("image_id") or meta.get("image")
        if not reference:
            raise ContainerFailed("the deployment recorded no image")
        if not _has_image(client, reference):
            if meta.get("registry"):
                self._pull(client, deployment, meta)
            elif deployment.artifact_key:
                self._load(client, str(deployment.artifact_key))
            if not _has_image(client, reference):
                raise ContainerFailed(f"the image {meta.get('image')} is neither in the engine nor in a registry")
        return str(reference)

    def _pull(self, client: EngineClient, deployment: Deployment, meta: dict[str, Any]) -> None:
        repository, _, tag = str(meta["image"]).rpartition(":")
        reference = meta.get("digest") or tag
        auth = registry_auth(self.settings, owner=deployment.project.owner_id)
        log.info("pulling %s@%s for the preview of %s", repository, reference, deployment.id)
        try:
            events = list(client.pull(repository, tag=reference, stream=True, decode=True, auth_config=auth))
        except APIError as error:
            raise RegistryError(f"the pull of {repository}@{reference} failed: {error.explanation or error}") from None
        finally:
            client.close_stream()
        errors = [str(event.get("error")) for event in events if event.get("error")]
        if errors:
            raise RegistryError(f"the pull of {repository}@{reference} failed: {errors[-1]}")

    def _load(self, client: EngineClient, artifact_key: str) -> None:
        with tempfile.TemporaryDirectory(prefix="dyonisus-image-") as folder:
            archive = Path(folder) / "image.tar.gz"
            current().storage.get_file(artifact_key, archive)
            try:
                with archive.open("rb") as data:
                    events = list(client.load_image(data))
            except APIError as error:
                raise ContainerFailed(f"the engine cannot load the image: {error.explanation or error}") from None
            finally:
                client.close_stream()
        errors = [str(event.get("error")) for event in events if event.get("error")]
        if errors:
            raise ContainerFailed(f"the engine cannot load the image: {errors[-1]}")

    # -- idle containers -----------------------------------------------------
    def touch(self, deployment_id: str) -> None:
        """Note a request; a file's mtime, so that every process of the instance sees it."""
        now = time.monotonic()
        if now - self._touched.get(deployment_id, 0.0) < TOUCH_EVERY_SECONDS:
            return
        self._touched[deployment_id] = now
        self.activity_dir.mkdir(parents=True, exist_ok=True)
        (self.activity_dir / deployment_id).touch()

    def _last_activity(self, deployment_id: str, *, default: float) -> float:
        try:
            return (self.activity_dir / deployment_id).stat().st_mtime
        except OSError:
            return default

    def _watch(self) -> None:
        with self._guard:
            self._started_since_sweep = True
            if self._reaper is None and not self._closed.is_set():
                self._reaper = threading.Thread(target=self._reap, name=f"preview-reaper-{self.instance}", daemon=True)
                self._reaper.start()

    def _reap(self) -> None:
        """Sweep until no container of this instance is left (a new one starts the reaper again)."""
        faults = 0
        while not self._closed.wait(self.sweep_seconds):
            try:
                remaining = self.sweep()
                faults = 0
            except EngineUnavailable as error:
                faults += 1
                log.warning("the preview reaper cannot reach the engine: %s", error)
                remaining = 0 if faults >= ENGINE_FAILURES_BEFORE_REAPER_RESTS else 1
            except Exception:  # a thread's edge: one bad sweep must not end the reaper
                log.exception("the preview reaper's sweep failed")
                remaining = 1
            with self._guard:
                if remaining == 0 and not self._started_since_sweep:
                    self._reaper = None
                    return
                self._started_since_sweep = False

    def close(self) -> None:
        """End the reaper (the containers stay: another process of the instance may serve them)."""
        self._closed.set()
        with self._guard:
            reaper = self._reaper
        if reaper is not None:
            reaper.join(timeout=REAPER_JOIN_SECONDS)

    def sweep(self) -> int:
        """Remove containers idle for PREVIEW_IDLE_TIMEOUT seconds; returns how many are left."""
        remaining = 0
        with engine(self.settings.docker_host) as client:
            rows = client.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance}"})
            for row in rows:
                deployment_id = str(row["Labels"].get(LABEL_PREVIEW, ""))
                with self._lock(deployment_id):
                    idle = time.time() - self._last_activity(deployment_id, default=float(row["Created"]))
                    if idle < self.settings.preview_idle_timeout:
                        remaining += 1
                        continue
                    with suppress(NotFound):
                        client.remove_container(row["Id"], force=True)
                    self._forget_failure(deployment_id)
                log.info("stopped the preview container of %s after %d s without a request", deployment_id, idle)
        return remaining

    def stop(self, deployment_id: str) -> bool:
        removed = False
        with self._lock(deployment_id), engine(self.settings.docker_host) as client:
            labels = [f"{LABEL_PREVIEW}={deployment_id}", f"{LABEL_INSTANCE}={self.instance}"]
            for row in client.containers(all=True, filters={"label": labels}):
                with suppress(NotFound):
                    client.remove_container(row["Id"], force=True)
                    removed = True
        self._forget_failure(deployment_id)
        (self.activity_dir / deployment_id).unlink(missing_ok=True)
        return removed

    def container_log(self, deployment_id: str) -> str | None:
        with engine(self.settings.docker_host) as client:
            try:
                data = client.logs(self.name(deployment_id), stdout=True, stderr=True, tail=LOG_TAIL_LINES)
            except NotFound:
                return None
        return bytes(data).decode("utf-8", errors="replace")


def _has_image(client: EngineClient, reference: str) -> bool:
    try:
        client.inspect_image(reference)
    except NotFound:
        return False
    return True


def _exit_reason(state: dict[str, Any], port: int) -> str:
    if state.get("OOMKilled"):
        return "the container ran out of memory and was killed"
    return f"the container exited with code {state.get('ExitCode')} without opening 127.0.0.1:{port}"


_previews: dict[tuple[str | None, str], PreviewContainers] = {}
_previews_guard = threading.Lock()


def previews_for(settings: Settings) -> PreviewContainers:
    """The one PreviewContainers of this process for these settings."""
    key = (settings.docker_host, instance_key(settings))
    with _previews_guard:
        previews = replaced = _previews.get(key)
        if previews is None or previews.settings != settings:
            previews = _previews[key] = PreviewContainers(settings)
        else:
            replaced = None
    if replaced is not None:
        replaced.close()
    return previews


def close_previews() -> None:
    """End every reaper thread of this process (at shutdown)."""
    with _previews_guard:
        previews = list(_previews.values())
        _previews.clear()
    for each in previews:
        each.close()


def stop_preview(deployment_id: str, *, settings: Settings | None = None) -> bool:
    """Stop and remove the preview container of a deployment; True when one was running or kept.

    Call it when a deployment stops being what a host name serves: an alias moved on to a newer
    deployment, or the pull request closed. A later request to the deployment's own host name
    starts the container again, as after an idle stop. Static deployments have no container:
    for them (and for unknown ids) it returns False without asking the engine. It works from any
    process of the instance (web or worker), since the container is found in the engine by its
    labels, and raises EngineUnavailable when the engine cannot be reached (an actor retries it).
    """
    settings = settings or current().settings
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None or deployment.provider != "docker":
        return False
    return previews_for(settings).stop(deployment_id)


def serve_container(settings: Settings, deployment: Deployment) -> Response:
    """Answer a preview request of a READY Docker deployment from its container."""
    previews = previews_for(settings)
    port = 0
    for _ in range(2):
        try:
            port = previews.ensure_running(deployment)
        except ContainerFailed as failure:
            return failure_page(settings, deployment, str(failure))
        except (EngineUnavailable, RegistryError, StorageError) as error:
            abort(503, description=f"The preview cannot be started right now: {error}")
        previews.touch(deployment.id)
        try:
            return proxy(port, deployment.id)
        except httpx.ConnectError:
            continue  # it went away between the look and the request: look again
        except httpx.TransportError as error:
            return failure_page(settings, deployment, f"the container did not answer: {error}")
    return failure_page(settings, deployment, f"the container does not accept connections on 127.0.0.1:{port}")


def proxy(port: int, deployment_id: str) -> Response:
    """Send the current request to 127.0.0.1:port and stream the answer back."""
    target = f"http://127.0.0.1:{port}{quote(request.path, safe='/%:@!$&()*+,;=~-._')}"
    if request.query_string:
        target += "?" + request.query_string.decode("latin-1")
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}]
    headers += [
        ("X-Forwarded-For", request.remote_addr or ""),
        ("X-Forwarded-Host", request.host),
        ("X-Forwarded-Proto", request.scheme),
    ]
    client = httpx.Client(trust_env=False, timeout=httpx.Timeout(PROXY_TIMEOUT_SECONDS, connect=5.0))
    try:
        outgoing = client.build_request(request.method, target, headers=headers, content=request.get_data())
        upstream = client.send(outgoing, stream=True)
    except httpx.HTTPError:
        client.close()
        raise

    def body() -> Iterator[bytes]:
        try:
            yield from upstream.iter_raw()
        finally:
            upstream.close()
            client.close()

    answer = [(k, v) for k, v in upstream.headers.multi_items() if k.lower() not in HOP_BY_HOP]
    response = Response(body(), status=upstream.status_code, headers=answer, direct_passthrough=True)
    response.headers["X-Dyonisus-Deployment"] = deployment_id
    return response


def failure_page(settings: Settings, deployment: Deployment, reason: str) -> Response:
    """502: the container is not answering; links its log. The deployment stays READY."""
    log_url = api_url(settings, f"deploy/{deployment.id}/container-log")
    page = (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>Preview unavailable</title>'
        "<h1>This preview's container is not answering</h1>"
        f"<p>{escape(reason)}.</p>"
        "<p>The deployment is still ready: a later request starts its container again.</p>"
        f'<p><a href="{escape(log_url)}">Read the container log</a> · '
        f'<a href="{escape(details_url(settings, deployment.id))}">Deployment details</a></p></html>'
    )
    return Response(page, status=502, mimetype="text/html")


@blueprint.get("/api/deploy/<deployment_id>/container-log")
def container_log(deployment_id: str) -> Response | tuple[Response, int]:
    """The log (stdout and stderr) of the deployment's preview container, while it exists."""
    settings: Settings = current_app.config["SETTINGS"]
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None or deployment.provider != "docker":
        return jsonify({"error": "not_found", "message": "no Docker deployment has this id"}), 404
    try:
        text = previews_for(settings).container_log(deployment_id)
    except EngineUnavailable as error:
        return jsonify({"error": "engine_unavailable", "message": str(error)}), 503
    if text is None:
        message = "no container of this deployment exists now: it has not run yet, or it was stopped"
        return jsonify({"error": "not_found", "message": message}), 404
    return Response(text, mimetype="text/plain; charset=utf-8")
