"""Comment commands when GitHub fails at the worst moment: still exactly one reply."""

from __future__ import annotations

from models import CommentCommand, Deployment
from tests.conftest import Service, wait_for
from tests.payloads import REPO, comment_payload, pull_json, sha_for


def _replies(service: Service) -> list[dict]:  # type: ignore[type-arg]
    return [c for c in service.fake.comments.values() if "dyonisus-deploy:reply" in c["body"]]


def test_a_failed_reply_to_an_accepted_deploy_is_sent_again(service: Service) -> None:
    sha = sha_for("reply-fails")
    service.fake.pulls[2] = pull_json(2, head_sha=sha)
    service.fake.add_tarball(REPO, sha, {"index.html": "x"})
    service.fake.permissions[(REPO.lower(), "codertocat")] = "write"
    # The reply is the first comment the command writes (the sticky one follows the build).
    original = service.fake.handle

    def failing_reply(request):  # type: ignore[no-untyped-def]
        if request.method == "POST" and "dyonisus-deploy:reply" in request.body.decode() and not failing_reply.done:
            failing_reply.done = True
            from tests.fakegithub import Reply

            return service.fake._record(request, Reply(502, {"message": "injected 502"}))
        return original(request)

    failing_reply.done = False  # type: ignore[attr-defined]
    service.fake.handle = failing_reply  # type: ignore[method-assign]
    service.send("issue_comment", comment_payload("/deploy"))
    wait_for(lambda: Deployment.select().where(Deployment.status == "READY").exists())
    wait_for(lambda: len(_replies(service)) == 1, timeout=10)
    (reply,) = _replies(service)
    assert f"`{sha[:7]}`" in reply["body"]
    assert CommentCommand.get().reply_id == reply["id"]
    assert Deployment.select().count() == 1


def test_a_failed_reply_to_cancel_is_not_replaced_by_a_wrong_one(service: Service) -> None:
    sha = sha_for("cancel-reply-fails")
    files = {
        "package.json": '{"name": "s", "version": "1.0.0", "scripts": {"build": "node build.js"}}',
        "build.js": "setInterval(() => {}, 1000);",
    }
    service.fake.pulls[2] = pull_json(2, head_sha=sha)
    service.fake.add_tarball(REPO, sha, files)
    service.fake.permissions[(REPO.lower(), "codertocat")] = "write"
    service.send("issue_comment", comment_payload("/deploy"))
    wait_for(lambda: Deployment.select().where(Deployment.status == "BUILDING").exists())
    wait_for(lambda: len(_replies(service)) == 1)
    service.fake.fail("POST", r"/issues/2/comments$", 502, times=1)
    service.send("issue_comment", comment_payload("/cancel", comment_id=5002))
    wait_for(lambda: Deployment.get().status == "CANCELLED")
    wait_for(lambda: len(_replies(service)) == 2, timeout=10)
    assert "Cancelled 1 deployment" in _replies(service)[-1]["body"]
