"""Parsing comment commands (pure)."""

from __future__ import annotations

from bot.commands import find_commands, plan_comment
from tests.payloads import load


def names(body: str) -> list[str]:
    return [c.name for c in find_commands(body)]


def test_a_command_is_a_line_that_starts_with_it() -> None:
    assert names("/deploy") == ["deploy"]
    assert names("   /Deploy\r\nthanks") == ["deploy"]
    assert names("please /deploy this") == []
    assert names("LGTM\r\n/STATUS\r\n") == ["status"]


def test_quotes_code_and_lookalikes_are_not_commands() -> None:
    assert names("> /deploy") == []
    assert names("```\n/deploy\n```") == []
    assert names("~~~~\n/cancel\n~~~\n/still-code\n~~~~\n/help") == ["help"]
    assert names("`/deploy`") == []
    deployment = find_commands("/deployment")[0]
    assert deployment.name == "deployment" and deployment.problem is not None


def test_arguments_are_checked() -> None:
    (ok,) = find_commands("/deploy 6113728F27AE82C7B1A177C8D03F9E96E0ADF246")
    assert ok.problem is None and ok.args == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert find_commands("/deploy main; rm -rf /")[0].problem
    assert find_commands("/cancel now please")[0].problem
    assert find_commands("/deploy abc")[0].problem


def test_many_commands_run_the_first_only() -> None:
    payload = load("issue_comment.created")
    payload["comment"]["body"] = "/status\n/cancel\n/deploy"
    plan = plan_comment(payload, app_id="1")
    assert plan is not None and plan.command.name == "status" and plan.ignored == 2


def test_edits_deletes_bots_and_the_app_itself_never_run_commands() -> None:
    for name in ("issue_comment.edited", "issue_comment.deleted"):
        payload = load(name)
        payload["comment"]["body"] = "/deploy"
        assert plan_comment(payload, app_id="1") is None
    payload = load("issue_comment.created")
    payload["comment"]["body"] = "/deploy"
    payload["comment"]["user"]["type"] = "Bot"
    assert plan_comment(payload, app_id="1") is None
    payload["comment"]["user"]["type"] = "User"
    payload["comment"]["performed_via_github_app"] = {"id": 1, "slug": "dyonisus-deploy"}
    assert plan_comment(payload, app_id="1") is None


def test_huge_unicode_and_empty_bodies() -> None:
    assert names("") == []
    assert names("🚀 " * 20_000) == []
    assert names("x" * 65_000 + "\n/help") == ["help"]
    assert names("/hélp") == []
    payload = load("issue_comment.created")
    payload["comment"]["body"] = None
    assert plan_comment(payload, app_id="1") is None
