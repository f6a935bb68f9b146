"""The JSON API: deployment state, artifact and log downloads, health."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, stream_with_context

from core.errors import StorageError
from core.settings import Settings
from core.timeutil import isoformat
from models import Deployment, database
from tasks.previews import aliases_of
from tasks.runtime import current
from web.urls import api_url, preview_url

blueprint = Blueprint("api", __name__)


def deployment_json(settings: Settings, deployment: Deployment) -> dict[str, Any]:
    has_artifact = bool(deployment.artifact_key)
    return {
        "id": deployment.id,
        "status": deployment.status,
        "provider": deployment.provider,
        "commitSha": deployment.commit_sha,
        "branch": deployment.branch,
        "startedAt": isoformat(deployment.started_at),
        "finishedAt": isoformat(deployment.finished_at),
        "createdAt": isoformat(deployment.created_at),
        "artifactUrl": api_url(settings, f"deploy/{deployment.id}/artifact") if has_artifact else None,
        "logsUrl": api_url(settings, f"deploy/{deployment.id}/logs") if deployment.logs_key else None,
        "url": preview_url(settings, deployment.id) if deployment.status == "READY" else None,
        "aliases": [preview_url(settings, label) for label in aliases_of(deployment)],
        "environment": deployment.environment,
        "pullRequest": deployment.pr_number,
        "outcome": deployment.outcome,
        "reason": deployment.reason,
        "repository": deployment.project.full_name,
    }


def not_found(message: str = "no such deployment") -> tuple[Response, int]:
    return jsonify({"error": "not_found", "message": message}), 404


@blueprint.get("/api/deploy/<deployment_id>")
def get_deployment(deployment_id: str) -> Response | tuple[Response, int]:
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None:
        return not_found()
    return jsonify(deployment_json(current_app.config["SETTINGS"], deployment))


def _download(key: str | None, *, mimetype: str, filename: str) -> Response | tuple[Response, int]:
    if not key:
        return not_found("not stored (yet)")
    try:
        chunks = current().storage.iter_chunks(key)
    except StorageError as error:
        return jsonify({"error": "storage_unavailable", "message": str(error)}), 503
    response = Response(stream_with_context(chunks), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    return response


@blueprint.get("/api/deploy/<deployment_id>/artifact")
def get_artifact(deployment_id: str) -> Response | tuple[Response, int]:
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None:
        return not_found()
    return _download(deployment.artifact_key, mimetype="application/gzip", filename=f"{deployment_id}.tar.gz")


@blueprint.get("/api/deploy/<deployment_id>/logs")
def get_logs(deployment_id: str) -> Response | tuple[Response, int]:
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None:
        return not_found()
    return _download(deployment.logs_key, mimetype="text/plain", filename=f"{deployment_id}.log")


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    try:
        database.execute_sql("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any database fault means unhealthy
        return jsonify({"status": "unhealthy", "database": str(error)}), 503
    return jsonify({"status": "ok"}), 200
