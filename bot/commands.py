"""Comment commands (pure): find the command in a pull-request comment and decide who may run it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.plan import MAX_NUMBER, identifier, mapping, text

COMMANDS = ("deploy", "redeploy", "cancel", "status", "help")
# https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
# (`maintain` shows as `write` there).
ALLOWED_PERMISSIONS = ("admin", "maintain", "write")
_COMMAND_LINE = re.compile(r"^[ \t]*/([A-Za-z][A-Za-z0-9_-]*)(?:[ \t]+(.*?))?[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")
HELP = """\
Dyonisus Deploy commands (a line that starts with one; people with write access only):

| Command | What it does |
| :--- | :--- |
| `/deploy` | Deploy the head of this pull request now (for a fork: approve and build its current head) |
| `/deploy <sha>` | Deploy one commit of this pull request |
| `/redeploy` | Build the latest deployment again |
| `/cancel` | Stop the queued and running deployments of this pull request |
| `/status` | Refresh the preview comment and reply with its table |
| `/help` | This list |"""


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    # What is wrong with it; None for a valid command.
    problem: str | None = None


def find_commands(body: str) -> list[Command]:
    """Every command line of a comment, outside code blocks and quotes, in order."""
    found: list[Command] = []
    fence: str | None = None
    for line in body.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        if line.lstrip().startswith(">"):
            continue
        match = _COMMAND_LINE.match(line)
        if match:
            found.append(check(match.group(1).lower(), (match.group(2) or "").strip()))
    return found


def check(name: str, args: str) -> Command:
    if name not in COMMANDS:
        return Command(name, args, f"`/{name}` is not a command")
    if name == "deploy" and args and not _SHA.match(args):
        return Command(name, args, "`/deploy` takes nothing or one commit SHA (7 to 40 hex characters)")
    if name != "deploy" and args:
        return Command(name, args, f"`/{name}` takes no arguments")
    return Command(name, args.lower())


@dataclass(frozen=True)
class CommentPlan:
    """What a comment asks: one command (the first), on a pull request or not."""

    command: Command
    on_pull_request: bool
    number: int
    comment_id: int
    author: str
    ignored: int  # further command lines in the same comment, not run


def plan_comment(payload: dict[str, Any], *, app_id: str | None) -> CommentPlan | None:
    """None unless a person created a comment that holds a command line."""
    if payload.get("action") != "created":
        return None
    comment = mapping(payload.get("comment"))
    user = mapping(comment.get("user"))
    login = text(user.get("login")) or ""
    if user.get("type") == "Bot" or login.endswith("[bot]"):
        return None
    via = mapping(comment.get("performed_via_github_app"))
    if app_id and str(via.get("id")) == str(app_id):
        return None
    commands = find_commands(text(comment.get("body")) or "")
    issue = mapping(payload.get("issue"))
    comment_id = identifier(comment.get("id"))
    number = identifier(issue.get("number"), maximum=MAX_NUMBER)
    if not commands or comment_id is None or number is None or not login:
        return None
    return CommentPlan(
        command=commands[0],
        on_pull_request=bool(issue.get("pull_request")),
        number=number,
        comment_id=comment_id,
        author=login,
        ignored=len(commands) - 1,
    )
