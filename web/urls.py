"""Every absolute link the service writes (to GitHub, the API, the pages) is built here."""

from __future__ import annotations

from urllib.parse import urlsplit

from core.settings import Settings


def details_url(settings: Settings, deployment_id: str) -> str:
    return f"{settings.public_url}/deployments/{deployment_id}"


def api_url(settings: Settings, path: str) -> str:
    return f"{settings.public_url}/api/{path.lstrip('/')}"


def preview_url(settings: Settings, label: str) -> str:
    """http://<label>.<PREVIEW_DOMAIN>[:port]/ with PUBLIC_URL's scheme and port."""
    parts = urlsplit(settings.public_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{label}.{settings.preview_domain}{port}/"


def preview_label(settings: Settings, host: str) -> str | None:
    """The label of a preview host (port ignored), or None when host is not a preview host."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower().rstrip(".")
    suffix = "." + settings.preview_domain
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    return label if label and "." not in label else None
