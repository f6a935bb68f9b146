"""Comment commands end to end: permission, reactions, one reply, and safe builds of forks."""

from __future__ import annotations

import json

import pytest

from models import CommentCommand, Deployment
from tests.conftest import WEBHOOK_SECRET, Service, tiny_site, wait_for
from tests.payloads import REPO, comment_payload, pr_payload, pull_json, sha_for


def _replies(service: Service) -> list[dict]:
    return [c for c in service.fake.comments.values() if "dyonisus-deploy:reply" in c["body"]]


def _reactions(service: Service, comment_id: int = 5001) -> list[str]:
    return [content for cid, content in service.fake.reactions if cid == comment_id]


def _command(service: Service, body: str, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    response = service.send("issue_comment", comment_payload(body, **kwargs))
    assert response.status_code == 202, response.text
    return dict(response.json())


def _settled(service: Service) -> None:
    wait_for(lambda: all(c.state != "queued" for c in CommentCommand.select()))


def _same_repo_pr(service: Service, sha: str, files=None) -> None:  # type: ignore[no-untyped-def]
    service.fake.pulls[2] = pull_json(2, head_sha=sha)
    service.fake.add_tarball(REPO, sha, files or {"index.html": sha})


def test_writer_deploys_with_reactions_and_one_reply(service: Service) -> None:
    sha = sha_for("cmd-head")
    _same_repo_pr(service, sha)
    service.fake.permissions[(REPO.lower(), "codertocat")] = "write"
    _command(service, "/deploy")
    wait_for(lambda: "rocket" in _reactions(service))
    (deployment,) = Deployment.select()
    assert deployment.commit_sha == sha and deployment.status == "READY" and deployment.pr_number == 2
    assert _reactions(service) == ["eyes", "rocket"]
    (reply,) = _replies(service)
    assert f"`{sha[:7]}`" in reply["body"] and "@Codertocat" in reply["body"]
    assert service.fake.requests("GET", r"/collaborators/Codertocat/permission")


@pytest.mark.parametrize("permission", ["read", "triage", "none", None])
def test_without_write_access_nothing_runs(service: Service, permission: str | None) -> None:
    _same_repo_pr(service, sha_for("refused"))
    if permission is not None:
        service.fake.permissions[(REPO.lower(), "codertocat")] = permission
    _command(service, "/deploy")
    _settled(service)
    assert Deployment.select().count() == 0
    (reply,) = _replies(service)
    assert "only people with write access" in reply["body"]
    assert _reactions(service) == ["confused"]
    assert not service.fake.requests("GET", "/tarball/")


def test_author_association_is_not_trusted(service: Service) -> None:
    _same_repo_pr(service, sha_for("assoc"))
    payload = comment_payload("/deploy")
    payload["comment"]["author_association"] = "OWNER"
    service.send("issue_comment", payload)
    _settled(service)
    assert Deployment.select().count() == 0


def test_permission_api_outage_is_retried_then_answered_once(service: Service, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tasks.commands

    monkeypatch.setattr(tasks.commands, "BACKOFF_SECONDS", (0, 0, 0))
    _same_repo_pr(service, sha_for("outage"))
    service.fake.permissions[(REPO.lower(), "codertocat")] = "admin"
    service.fake.fail("GET", "/permission", 502, times=1)
    _command(service, "/deploy")
    wait_for(lambda: Deployment.select().count() == 1)
    _settled(service)
    service.fake.fail("GET", "/permission", 503, times=10)
    _command(service, "/deploy", comment_id=5002)
    _settled(service)
    assert Deployment.select().count() == 1
    assert len(_replies(service)) == 2
    assert "could not run" in _replies(service)[-1]["body"]


def test_fork_approval_builds_the_approved_sha_only(service: Service) -> None:
    approved, moved = sha_for("fork-1"), sha_for("fork-2")
    service.send("pull_request", pr_payload("opened", head_sha=approved, fork=True))
    service.fake.pulls[2] = pull_json(2, head_sha=approved, fork=True)
    service.fake.add_tarball(REPO, approved, {"index.html": "approved"})
    service.fake.add_tarball(REPO, moved, {"index.html": "not approved"})
    service.fake.permissions[(REPO.lower(), "codertocat")] = "maintain"
    _command(service, "/deploy")
    wait_for(lambda: "eyes" in _reactions(service))
    # The fork pushes again right after the approval.
    service.fake.pulls[2] = pull_json(2, head_sha=moved, fork=True)
    service.send("pull_request", pr_payload("synchronize", head_sha=moved, fork=True))
    wait_for(lambda: "rocket" in _reactions(service))
    (deployment,) = Deployment.select()
    assert deployment.commit_sha == approved and deployment.from_fork
    assert deployment.source_ref == "refs/pull/2/head"
    assert service.fake.requests("GET", f"/tarball/{approved}") and not service.fake.requests(
        "GET", f"/tarball/{moved}"
    )
    (reply,) = _replies(service)
    assert f"`{approved[:7]}`" in reply["body"] and "later pushes need a new" in reply["body"]
    wait_for(
        lambda: any(
            "/deploy" in c["body"] and "fork" in c["body"]
            for c in service.fake.comments.values()
            if "sticky" in c["body"]
        )
    )


def test_fork_build_gets_no_secret_and_the_default_branch_config(service: Service, rsa_key, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Secrets in the service's own environment must not reach the build either.
    for name in ("GITHUB_WEBHOOK_SECRET", "AWS_SECRET_ACCESS_KEY", "REGISTRY_PASSWORD", "DEPLOY_TOKEN"):
        monkeypatch.setenv(name, "process-secret-value")
    sha = sha_for("fork-env")
    files = tiny_site()
    files["build.js"] = (
        "console.log('ENV ' + JSON.stringify(process.env));"
        "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/index.html', 'fork');"
    )
    # The fork's own config would print secrets; it must be ignored.
    files["dyonisus.yml"] = 'build_command: node -e "console.log(process.env)"\noutput_dir: .\n'
    service.fake.files[("main", "dyonisus.yml")] = "output_dir: dist\n"
    service.fake.pulls[2] = pull_json(2, head_sha=sha, fork=True)
    service.fake.add_tarball(REPO, sha, files)
    service.fake.permissions[(REPO.lower(), "codertocat")] = "write"
    _command(service, "/deploy")
    wait_for(lambda: "rocket" in _reactions(service))
    (deployment,) = Deployment.select()
    with service.http() as client:
        log = client.get(f"/api/deploy/{deployment.id}/logs").text
    env_line = next(line for line in log.splitlines() if " ENV {" in line)
    env = json.loads(env_line.split(" ENV ", 1)[1])
    secrets = [WEBHOOK_SECRET, rsa_key[0].splitlines()[1], *service.fake.tokens]
    for value in env.values():
        assert not any(secret in value for secret in secrets)
    assert not any(secret in log for secret in secrets)
    leaked = {
        k for k in env if any(w in k.upper() for w in ("GITHUB", "SECRET", "TOKEN", "PRIVATE", "AWS", "PASSWORD"))
    }
    assert not leaked
    assert "process-secret-value" not in log
    assert service.fake.requests("GET", r"/contents/dyonisus.yml")


def test_deploy_a_named_commit_of_the_pull_request(service: Service) -> None:
    older, head = sha_for("older-commit"), sha_for("head-commit")
    _same_repo_pr(service, head)
    service.fake.pull_commits[2] = [older, head]
    service.fake.add_tarball(REPO, older, {"index.html": "older"})
    service.fake.permissions[(REPO.lower(), "codertocat")] = "write"
    _command(service, f"/deploy {older[:10].upper()}")
    wait_for(lambda: "rocket" in _reactions(service))
    assert [d.commit_sha for d in Deployment.select()] == [older]
    _command(service, "/deploy 1234567", comment_id=5002)
    _settled(service)
    assert "is not one commit" in _replies(service)[-1]["body"]
    assert Deployment.select().count() == 1


def test_cancel_redeploy_status_and_help(service: Service) -> None:
    sha = sha_for("slow-cmd")
    files = tiny_site()
    files["build.js"] = "console.log('slow'); setInterval(() => {}, 1000);"
    _same_repo_pr(service, sha, files)
    service.fake.permissions[(REPO.lower(), "codertocat")] = "write"
    _command(service, "/deploy")
    wait_for(lambda: Deployment.select().where(Deployment.status == "BUILDING").exists())
    _command(service, "/cancel", comment_id=5002)
    wait_for(lambda: Deployment.get().status == "CANCELLED")
    assert "Cancelled 1 deployment" in _replies(service)[-1]["body"]
    assert "confused" not in _reactions(service, 5001)

    service.fake.add_tarball(REPO, sha, {"index.html": "fixed"})
    _command(service, "/redeploy", comment_id=5003)
    wait_for(lambda: Deployment.select().where(Deployment.status == "READY").exists())
    wait_for(lambda: "rocket" in _reactions(service, 5003))
    _command(service, "/status", comment_id=5004)
    _command(service, "/HELP", comment_id=5005)
    _settled(service)
    replies = _replies(service)
    assert len(replies) == 5
    by_command = {reply["body"].splitlines()[1]: reply["body"] for reply in replies}
    assert "| Project | Status |" in by_command["> /status"] and "Ready" in by_command["> /status"]
    assert "`/deploy <sha>`" in by_command["> /help"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/deployment", "is not a command"),
        ("/frobnicate now", "is not a command"),
        ("/deploy main && rm -rf /", "takes nothing or one commit SHA"),
        ("/cancel all of them", "takes no arguments"),
    ],
)
def test_unknown_or_malformed_commands_point_to_help(service: Service, body: str, expected: str) -> None:
    _command(service, body)
    _settled(service)
    (reply,) = _replies(service)
    assert expected in reply["body"] and "/help" in reply["body"]
    assert Deployment.select().count() == 0


def test_comments_that_are_not_commands_do_nothing(service: Service) -> None:
    for payload in (
        comment_payload("/deploy", action="edited"),
        comment_payload("/deploy", action="deleted"),
        comment_payload("/deploy", user="dyonisus-deploy[bot]", user_type="Bot"),
        comment_payload("> /deploy\n```\n/deploy\n```\nuse `/deploy` later"),
        comment_payload(""),
        comment_payload(None),
        comment_payload("🚀" * 30_000 + "ünïcödé"),
        comment_payload("x" * 65_536),
    ):
        response = service.send("issue_comment", payload)
        assert response.status_code in (200, 202), response.text
    assert CommentCommand.select().count() == 0
    assert not service.fake.calls


def test_plain_issue_gets_one_reply_and_no_build(service: Service) -> None:
    _command(service, "/deploy", on_pull_request=False, number=1)
    _settled(service)
    (reply,) = _replies(service)
    assert "work on pull requests" in reply["body"]
    assert Deployment.select().count() == 0
    assert not service.fake.requests("GET", "/permission")


def test_many_commands_and_redelivery_give_one_reply(service: Service) -> None:
    service.fake.permissions[(REPO.lower(), "codertocat")] = "write"
    _same_repo_pr(service, sha_for("many"))
    payload = comment_payload("/status\r\n/cancel\r\n/deploy")
    service.send("issue_comment", payload, delivery="same-delivery")
    service.send("issue_comment", payload, delivery="same-delivery")
    service.send("issue_comment", payload, delivery="another-delivery")
    _settled(service)
    (reply,) = _replies(service)
    assert "2 more were ignored" in reply["body"]
    assert Deployment.select().count() == 0


def test_fork_head_that_moved_after_the_comment_is_not_approved(service: Service) -> None:
    reviewed, sneaked = sha_for("reviewed"), sha_for("sneaked")
    service.send("pull_request", pr_payload("opened", head_sha=reviewed, fork=True))
    service.fake.pulls[2] = pull_json(2, head_sha=sneaked, fork=True)
    service.fake.permissions[(REPO.lower(), "codertocat")] = "admin"
    _command(service, "/deploy")
    _settled(service)
    assert Deployment.select().count() == 0
    (reply,) = _replies(service)
    assert f"moved to `{sneaked[:7]}`" in reply["body"]
