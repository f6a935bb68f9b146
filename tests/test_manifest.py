"""app.yml is the contract with GitHub: it subscribes to exactly the events the router handles."""

from __future__ import annotations

from pathlib import Path

import yaml

from bot.webhook import ROUTER

MANIFEST = Path(__file__).parent.parent / "app.yml"
# GitHub sends these to every App without a subscription (API-NOTES section 16).
ALWAYS_DELIVERED = {"installation", "installation_repositories"}


def test_manifest_events_match_the_router() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert set(manifest["default_events"]) == ROUTER.events() - ALWAYS_DELIVERED


def test_manifest_has_what_github_requires() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["url"] and manifest["hook_attributes"]["url"].endswith("/api/github/webhooks")
    assert set(manifest["default_permissions"]) >= {"contents", "statuses", "checks"}
