"""Registering the GitHub App from app.yml (GitHub's manifest flow), for a service not set up yet."""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from flask import Blueprint, abort, current_app, render_template, request

from bot.github import GitHubApp
from core.settings import Settings
from tasks.runtime import current

blueprint = Blueprint("setup", __name__, template_folder="templates")
MANIFEST = Path(__file__).parent.parent / "app.yml"
# https://docs.github.com/en/apps/sharing-github-apps/registering-a-github-app-from-a-manifest:
# the three steps must finish within one hour.
STATE_SECONDS = 3600
DOTENV = Path(".env")
ORGANIZATION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")

_states: dict[str, float] = {}
_lock = threading.Lock()


def manifest_for(settings: Settings) -> dict[str, Any]:
    """app.yml with every address pointing at this service's PUBLIC_URL."""
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    base = settings.public_url
    manifest["url"] = base
    manifest["hook_attributes"]["url"] = f"{base}/api/github/webhooks"
    manifest["redirect_url"] = f"{base}/setup/callback"
    return dict(manifest)


def _unconfigured() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    if settings.github_configured:
        abort(404, description="The GitHub App is registered already.")
    return settings


@blueprint.get("/setup")
def setup_page() -> str:
    settings = _unconfigured()
    state = secrets.token_urlsafe(24)
    with _lock:
        now = time.monotonic()
        for old in [key for key, expiry in _states.items() if expiry < now]:
            del _states[old]
        _states[state] = now + STATE_SECONDS
    org = request.args.get("org", "").strip()
    if org and not ORGANIZATION.fullmatch(org):
        abort(400, description="org must be a GitHub organization name (letters, digits and single hyphens).")
    target = f"/organizations/{org}/settings/apps/new" if org else "/settings/apps/new"
    return render_template(
        "setup.html",
        action=f"{settings.github_web_url}{target}?state={state}",
        manifest=json.dumps(manifest_for(settings)),
        org=org,
        local=urlsplit(settings.public_url).hostname in ("localhost", "127.0.0.1", "::1"),
    )


@blueprint.get("/setup/callback")
def setup_callback() -> str:
    settings = _unconfigured()
    code, state = request.args.get("code", ""), request.args.get("state", "")
    with _lock:
        expiry = _states.pop(state, None)
    if not code or expiry is None or expiry < time.monotonic():
        abort(400, description="This registration link is unknown or expired; start again from /setup.")
    try:
        response = httpx.post(
            f"{settings.github_api_url}/app-manifests/{code}/conversions",
            headers={"Accept": "application/vnd.github+json"},
            timeout=30,
            trust_env=False,
        )
    except httpx.HTTPError as error:
        abort(502, description=f"GitHub cannot be reached to finish the registration: {error}")
    if response.status_code != 201:
        abort(502, description=f"GitHub refused the registration ({response.status_code}); start again from /setup.")
    app_data = response.json()
    values = {
        "GITHUB_APP_ID": str(app_data["id"]),
        "GITHUB_PRIVATE_KEY": app_data["pem"],
        "GITHUB_WEBHOOK_SECRET": app_data["webhook_secret"],
    }
    write_dotenv(DOTENV, values)
    _configure(settings, values)
    return render_template("registered.html", app=app_data, dotenv=DOTENV.resolve())


def write_dotenv(path: Path, values: dict[str, str]) -> None:
    """Set keys in a .env file (kept private: mode 0600), leaving its other lines alone."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in lines if line.partition("=")[0].strip().removeprefix("export ") not in values]
    for key, value in values.items():
        escaped = value.strip().replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        kept.append(f'{key}="{escaped}"')
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join(kept) + "\n")


def _configure(settings: Settings, values: dict[str, str]) -> None:
    """Use the new App at once, without a restart."""
    configured = replace(
        settings,
        github_app_id=values["GITHUB_APP_ID"],
        github_private_key=values["GITHUB_PRIVATE_KEY"].strip() + "\n",
        github_webhook_secret=values["GITHUB_WEBHOOK_SECRET"],
    )
    current_app.config["SETTINGS"] = configured
    runtime = current()
    runtime.settings = configured
    runtime.github = GitHubApp(configured)
