"""Preview hosting: `<deployment-id>.<PREVIEW_DOMAIN>` serves that deployment's files."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import tempfile
import threading
from pathlib import Path

from flask import Flask, Response, abort, request, send_file

from builders.unpack import unpack_artifact
from core.errors import DeployError
from core.ids import looks_like_id
from core.settings import Settings
from models import Alias, Deployment, DeploymentStatus
from tasks.runtime import current
from web import containers
from web.urls import preview_label

for _type, _extension in (
    ("text/javascript", ".js"),
    ("text/javascript", ".mjs"),
    ("text/css", ".css"),
    ("image/svg+xml", ".svg"),
    ("application/wasm", ".wasm"),
    ("application/manifest+json", ".webmanifest"),
    ("font/woff2", ".woff2"),
    ("application/json", ".map"),
):
    mimetypes.add_type(_type, _extension)

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def cache_root(settings: Settings) -> Path:
    """Unpacked artifacts of this instance only (keyed by its database and storage)."""
    instance = hashlib.sha256(f"{settings.database_url}|{settings.storage_url}".encode()).hexdigest()[:12]
    return settings.cache_dir.resolve() / "previews" / instance


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def unpacked_site(settings: Settings, deployment: Deployment) -> Path:
    """The deployment's artifact unpacked on local disk, fetched from storage once."""
    target = cache_root(settings) / deployment.id
    if target.is_dir():
        return target
    with _lock(deployment.id):
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{deployment.id}-", dir=target.parent))
        try:
            archive = staging / "artifact.tar.gz"
            current().storage.get_file(str(deployment.artifact_key), archive)
            unpack_artifact(archive, staging / "site")
            os.replace(staging / "site", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_file(root: Path, url_path: str) -> Path | None:
    """The file a URL path names inside root; None for anything missing or outside."""
    relative = url_path.lstrip("/")
    candidate = (root / relative).resolve()
    real_root = root.resolve()
    if candidate != real_root and real_root not in candidate.parents:
        return None
    if candidate.is_dir():
        candidate = candidate / "index.html"
    elif not candidate.exists() and not relative.endswith(".html"):
        html = candidate.with_name(candidate.name + ".html")
        candidate = html if html.is_file() else candidate
    if not candidate.is_file():
        return None
    if real_root not in candidate.resolve().parents:
        return None
    return candidate


def find_deployment(label: str) -> Deployment | None:
    """A deployment by its own id, or the one a stable alias points at."""
    if looks_like_id(label):
        return Deployment.get_or_none(Deployment.id == label)
    alias = Alias.get_or_none(Alias.label == label)
    return alias.deployment if alias is not None else None


def serve_preview(settings: Settings, label: str) -> Response:
    deployment = find_deployment(label)
    if deployment is not None and deployment.provider == "docker" and deployment.status == DeploymentStatus.READY:
        return containers.serve_container(settings, deployment)
    if deployment is None or deployment.status != DeploymentStatus.READY.value or not deployment.artifact_key:
        abort(404, description="No ready deployment has this address.")
    try:
        root = unpacked_site(settings, deployment)
    except DeployError as error:
        abort(503, description=f"The preview cannot be loaded right now: {error}")
    path = resolve_file(root, request.path)
    if path is None:
        fallback = resolve_file(root, "/404.html")
        if fallback is not None:
            response = send_file(fallback, mimetype="text/html")
            response.status_code = 404
            return response
        abort(404, description=f"{request.path} is not part of this deployment.")
    response = send_file(path, conditional=True, max_age=0)
    response.headers["X-Dyonisus-Deployment"] = deployment.id
    return response


def install_preview_host(app: Flask) -> None:
    """Route every request to a preview host to the preview, whatever its path.

    Also serves the container logs that a failing container preview links to.
    """
    app.register_blueprint(containers.blueprint)

    @app.before_request
    def route_preview_host() -> Response | None:
        settings: Settings = app.config["SETTINGS"]
        # request.host is empty for a host name werkzeug finds invalid: never a preview.
        label = preview_label(settings, request.host)
        if label is None:
            return None
        return serve_preview(settings, label)
