"""HTML pages: the home page and a deployment's details page with its log."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template

from core.errors import StorageError
from core.settings import Settings
from models import Deployment, Project
from tasks.intake import failed_deliveries
from tasks.runtime import current
from web.urls import preview_url

blueprint = Blueprint("pages", __name__, template_folder="templates")
RECENT = 50
LOG_PAGE_LIMIT = 2 * 1024 * 1024


@blueprint.get("/")
def home() -> str:
    settings: Settings = current_app.config["SETTINGS"]
    recent = Deployment.select(Deployment, Project).join(Project).order_by(Deployment.created_at.desc()).limit(RECENT)
    return render_template(
        "home.html", settings=settings, deployments=list(recent), failed_deliveries=failed_deliveries()
    )


def _log_text(deployment: Deployment) -> str | None:
    if not deployment.logs_key:
        return None
    try:
        data = current().storage.read_bytes(deployment.logs_key)
    except StorageError as error:
        return f"(the log cannot be read right now: {error})"
    if len(data) > LOG_PAGE_LIMIT:
        data = b"(earlier lines cut; download the whole log)\n" + data[-LOG_PAGE_LIMIT:]
    return data.decode("utf-8", errors="replace")


@blueprint.get("/deployments/<deployment_id>")
def deployment_page(deployment_id: str) -> str:
    settings: Settings = current_app.config["SETTINGS"]
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None:
        abort(404, description="No deployment has this id.")
    return render_template(
        "deployment.html",
        deployment=deployment,
        project=deployment.project,
        preview=preview_url(settings, deployment.id) if deployment.status == "READY" else None,
        log_text=_log_text(deployment),
        refresh=deployment.status in ("PENDING", "BUILDING"),
    )
