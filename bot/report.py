"""What GitHub is told about a deployment: commit status and check run (texts are pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.github import CHECK_OUTPUT_LIMIT, STATUS_DESCRIPTION_LIMIT, Installation
from core.timeutil import isoformat, utcnow

STATUS_CONTEXT = "dyonisus/deploy"
CHECK_RUN_NAME = "Dyonisus Deploy"
LOG_TAIL_LINES = 80
# Check run buttons: label <= 20, description <= 40, identifier <= 20 characters.
REDEPLOY_ACTION = {"label": "Redeploy", "description": "Build and deploy this commit again", "identifier": "redeploy"}
CANCEL_ACTION = {"label": "Cancel", "description": "Stop this deployment", "identifier": "cancel"}
# GitHub deployment status for each outcome (https://docs.github.com/en/rest/deployments/statuses).
DEPLOYMENT_STATES = {
    "success": "success",
    "failure": "failure",
    "timed_out": "failure",
    "error": "error",
    "cancelled": "inactive",
    "skipped": "inactive",
}

# How a finished deployment shows on GitHub: (commit status state, check run conclusion).
OUTCOMES: dict[str, tuple[str, str]] = {
    "success": ("success", "success"),
    "failure": ("failure", "failure"),
    "timed_out": ("failure", "timed_out"),
    "error": ("error", "failure"),
    "cancelled": ("error", "cancelled"),
    "skipped": ("success", "skipped"),
}


@dataclass(frozen=True)
class Report:
    """Everything needed to tell GitHub where a deployment stands."""

    repo: str
    deployment_id: str
    sha: str
    details_url: str
    preview_url: str | None
    outcome: str | None  # None while building
    reason: str | None = None
    log_tail: tuple[str, ...] = ()


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_description(report: Report) -> str:
    if report.outcome is None:
        text = f"Building {report.sha[:7]}…"
    elif report.outcome == "success":
        text = f"Deployed {report.sha[:7]}" + (f": {report.preview_url}" if report.preview_url else "")
    elif report.outcome == "error":
        text = f"Service error, not your code: {report.reason or 'unknown'}"
    else:
        text = report.reason or report.outcome
    return shorten(text, STATUS_DESCRIPTION_LIMIT)


def fenced(lines: tuple[str, ...], *, limit: int) -> str:
    """The log lines as a Markdown code block that stays within limit characters."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    body = list(lines)
    while body and len("\n".join(body)) + 2 * len(fence) + 2 > limit:
        body.pop(0)
    return f"{fence}\n" + "\n".join(body) + f"\n{fence}"


def check_run_output(report: Report) -> dict[str, str]:
    if report.outcome is None:
        return {"title": "Building", "summary": f"Building `{report.sha[:7]}`. [Follow the log]({report.details_url})."}
    titles = {
        "success": "Deployed",
        "failure": "Build failed",
        "timed_out": "Build timed out",
        "error": "Service error (not your code)",
        "cancelled": "Cancelled",
        "skipped": "Skipped",
    }
    if report.outcome == "success":
        summary = f"Preview: {report.preview_url}\n\n[Details and log]({report.details_url})"
    else:
        summary = f"{report.reason or titles[report.outcome]}\n\n[Details and log]({report.details_url})"
    output = {"title": titles[report.outcome], "summary": shorten_block(summary, CHECK_OUTPUT_LIMIT)}
    if report.log_tail:
        output["text"] = "Last lines of the build log:\n\n" + fenced(report.log_tail, limit=CHECK_OUTPUT_LIMIT - 40)
    return output


def shorten_block(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_run_body(report: Report) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": CHECK_RUN_NAME,
        "head_sha": report.sha,
        "external_id": report.deployment_id,
        "details_url": report.details_url,
        "output": check_run_output(report),
    }
    if report.outcome is None:
        body["status"] = "in_progress"
        body["started_at"] = isoformat(utcnow())
        body["actions"] = [CANCEL_ACTION]
    else:
        body["status"] = "completed"
        body["conclusion"] = OUTCOMES[report.outcome][1]
        body["completed_at"] = isoformat(utcnow())
        body["actions"] = [REDEPLOY_ACTION]
    return body


def send_status(github: Installation, report: Report) -> None:
    state = "pending" if report.outcome is None else OUTCOMES[report.outcome][0]
    github.create_status(
        report.repo,
        report.sha,
        state=state,
        description=status_description(report),
        target_url=report.details_url,
        context=STATUS_CONTEXT,
    )


def send_check_run(github: Installation, report: Report, check_run_id: int | None) -> int:
    """Create the check run, or update it when it exists; returns its id."""
    body = check_run_body(report)
    if check_run_id is None:
        return github.create_check_run(report.repo, body)
    body.pop("head_sha")
    github.update_check_run(report.repo, check_run_id, body)
    return check_run_id


def deployment_body(*, ref: str, environment: str, production: bool, deployment_id: str, sha: str) -> dict[str, Any]:
    """A GitHub Deployment that neither merges branches nor waits on our own pending status."""
    return {
        "ref": ref,
        "task": "deploy",
        "auto_merge": False,
        "required_contexts": [],
        "environment": environment,
        "transient_environment": not production,
        "production_environment": production,
        "description": shorten(f"Dyonisus Deploy {sha[:7]}", STATUS_DESCRIPTION_LIMIT),
        "payload": {"dyonisus_deployment": deployment_id, "sha": sha},
    }


def deployment_status_body(report: Report) -> dict[str, Any]:
    state = "in_progress" if report.outcome is None else DEPLOYMENT_STATES[report.outcome]
    body: dict[str, Any] = {
        "state": state,
        "log_url": report.details_url,
        "description": status_description(report),
        "auto_inactive": True,
    }
    if report.outcome == "success" and report.preview_url:
        body["environment_url"] = report.preview_url
    return body


def react_to_result(github: Installation, *, repo: str, comment_id: int | None, outcome: str | None) -> None:
    """🚀 on the command comment when its deployment is ready, 😕 when it failed."""
    if comment_id is None or outcome in (None, "cancelled", "skipped"):
        return
    github.create_reaction(repo, comment_id, "rocket" if outcome == "success" else "confused")
