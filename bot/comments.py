"""The one sticky pull-request comment: rendered from the database, written only when it changes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MARKER = "<!-- dyonisus-deploy:sticky -->"

STATES = {
    "queued": "⏳ Queued",
    "building": "🔨 Building",
    "ready": "✅ Ready",
    "failed": "❌ Failed",
    "error": "⚠️ Service error",
    "cancelled": "🚫 Cancelled",
    "skipped": "⏭️ Skipped",
}


@dataclass(frozen=True)
class CommentView:
    """What the comment shows; every field comes from stored state, never from the clock."""

    project: str
    number: int
    state: str | None = None
    preview_url: str | None = None
    alias_url: str | None = None
    details_url: str | None = None
    commit: str | None = None
    updated: str | None = None
    reason: str | None = None
    fork_waiting: bool = False
    approved_sha: str | None = None
    closed: bool = False


def state_of(status: str, outcome: str | None, started: bool) -> str:
    if status == "PENDING":
        return "queued"
    if status == "BUILDING":
        return "building" if started else "queued"
    if status == "READY":
        return "ready"
    if outcome == "skipped":
        return "skipped"
    if status == "CANCELLED":
        return "cancelled"
    return "error" if outcome == "error" else "failed"


def render(view: CommentView) -> str:
    lines = [MARKER, "### Dyonisus Deploy", ""]
    if view.closed:
        lines.append(f"The preview of #{view.number} was removed when the pull request closed.")
        lines.append("")
    if view.fork_waiting:
        lines.append(
            "This pull request comes from a fork, so it is not built automatically. "
            "A maintainer can review the code and approve a preview of its current head by commenting `/deploy`."
        )
        lines.append("")
    if view.state is not None:
        preview = "—"
        if view.state == "ready" and not view.closed:
            links = [f"[Visit preview]({view.alias_url or view.preview_url})"]
            if view.alias_url and view.preview_url:
                links.append(f"[this commit]({view.preview_url})")
            preview = " · ".join(links)
        lines += [
            "| Project | Status | Preview | Details | Commit | Updated (UTC) |",
            "| :--- | :--- | :--- | :--- | :--- | :--- |",
            f"| **{view.project}** | {STATES[view.state]} | {preview} | "
            f"[Log]({view.details_url}) | `{view.commit}` | {view.updated} |",
        ]
        if view.reason and view.state not in ("ready", "building", "queued"):
            lines += ["", f"> {view.reason}"]
    return "\n".join(lines) + "\n"


def digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()
