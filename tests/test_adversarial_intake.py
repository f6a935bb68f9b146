"""Hostile or malformed webhook deliveries: refused with a 4xx, never a 5xx, nothing stored."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from models import Deployment, WebhookDelivery
from tests.conftest import APP_ID, Service
from tests.payloads import REPO, check_payload, comment_payload, load, pr_payload, push_payload, sha_for


def _post(service: Service, body: bytes, signature: bytes) -> int:
    with service.http() as client:
        response = client.post(
            "/api/github/webhooks",
            content=body,
            headers=[
                (b"X-GitHub-Event", b"push"),
                (b"X-GitHub-Delivery", b"d-non-ascii"),
                (b"X-Hub-Signature-256", signature),
                (b"Content-Type", b"application/json"),
            ],
        )
    return response.status_code


def test_signature_with_non_ascii_characters_is_refused(service: Service) -> None:
    body = json.dumps(push_payload(sha_for("x"))).encode()
    assert _post(service, body, "sha256=\xe9\xe9".encode("latin-1")) == 401
    assert _post(service, body, ("sha256=" + "\xff" * 64).encode("latin-1")) == 401
    assert Deployment.select().count() == 0 and WebhookDelivery.select().count() == 0


def test_deeply_nested_json_is_a_400(service: Service) -> None:
    for body in (b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 200_000 + b"1" + b"}" * 200_000):
        response = service.send("push", body)
        assert response.status_code == 400, response.text
    assert WebhookDelivery.select().count() == 0


def _with(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """payload with the field at a dotted path replaced by value."""
    *parents, last = path.split(".")
    target = payload
    for key in parents:
        target = target[key]
    target[last] = value
    return payload


SHA = sha_for("malformed")
# (event, payload, whether a deployment may still come of it: the broken field is not essential)
MALFORMED: list[tuple[str, Callable[[], dict[str, Any]], bool]] = [
    ("push", lambda: _with(push_payload(SHA), "installation", [1]), False),
    ("push", lambda: _with(push_payload(SHA), "installation", {"id": 10**30}), False),
    ("push", lambda: _with(push_payload(SHA), "repository.owner", "Codertocat"), True),
    ("push", lambda: _with(push_payload(SHA), "repository.id", 10**30), False),
    ("push", lambda: _with(push_payload(SHA), "repository.name", ["Hello-World"]), False),
    ("push", lambda: _with(push_payload(SHA), "after", "../../../../../../../../../../../../../x"), False),
    ("push", lambda: _with(push_payload(SHA), "head_commit", "Update the site"), True),
    ("push", lambda: _with(push_payload(SHA), "commits", [1, "a"]), True),
    ("push", lambda: _with(push_payload(SHA), "commits", [{"added": 5}]), True),
    ("pull_request", lambda: _with(pr_payload("opened", head_sha=SHA), "pull_request.head", "changes"), False),
    ("pull_request", lambda: _with(pr_payload("opened", head_sha=SHA), "pull_request.base", ["main"]), True),
    ("pull_request", lambda: _with(pr_payload("opened", head_sha=SHA), "pull_request.base.repo", "x"), True),
    ("pull_request", lambda: _with(pr_payload("opened", head_sha=SHA), "pull_request.number", 10**30), False),
    ("pull_request", lambda: _with(pr_payload("opened", head_sha=SHA), "pull_request.head.sha", {"a": 1}), False),
    ("pull_request", lambda: _with(pr_payload("closed", head_sha=SHA), "installation", "1"), False),
    ("issue_comment", lambda: _with(comment_payload("/deploy"), "comment", [1]), False),
    ("issue_comment", lambda: _with(comment_payload("/deploy"), "comment.user", "Codertocat"), False),
    ("issue_comment", lambda: _with(comment_payload("/deploy"), "comment.id", 10**30), False),
    ("issue_comment", lambda: _with(comment_payload("/deploy"), "issue", "#2"), False),
    ("check_run", lambda: _with(_check("check_run.rerequested"), "check_run", "x"), False),
    ("check_run", lambda: _with(_check("check_run.requested_action"), "requested_action", "redeploy"), False),
    ("check_run", lambda: _with(_check("check_run.rerequested"), "check_run.head_sha", "../x"), False),
    ("check_suite", lambda: _with(_check("check_suite.rerequested"), "check_suite", ["x"]), False),
    ("installation", lambda: _with(load("installation.created"), "installation", [1]), False),
    ("installation", lambda: _with(load("installation.created"), "installation.account", "octocat"), False),
]


def _check(name: str) -> dict[str, Any]:
    return check_payload(name, app_id=APP_ID, sha=SHA, external_id=None)


@pytest.mark.parametrize(("event", "make", "may_build"), MALFORMED)
def test_fields_of_the_wrong_type_are_not_a_5xx(
    service: Service, event: str, make: Callable[[], dict[str, Any]], may_build: bool
) -> None:
    service.fake.add_tarball(REPO, SHA, {"index.html": "ok"})
    response = service.send(event, make())
    assert response.status_code < 500, response.text
    if may_build:
        assert [d.commit_sha for d in Deployment.select()] == [SHA]
    else:
        assert Deployment.select().count() == 0


def _nested(depth: int, leaf: str) -> bytes:
    text = json.dumps(push_payload(sha_for("deep")))
    return (text[:-1] + ', "deep": ' + '{"a":' * depth + leaf + "}" * depth + "}").encode()


@pytest.mark.parametrize("depth", [450, 900])
def test_deep_json_with_a_lone_surrogate_is_not_a_5xx(service: Service, depth: int) -> None:
    response = service.send("push", _nested(depth, '"\\ud800"'), route=False)
    assert response.status_code in (202, 400), response.text


def test_text_no_database_can_hold_becomes_a_replacement_character() -> None:
    from bot.webhook import parse_json

    data = parse_json('{"a": "x\\u0000y", "b": ["\\uDC00"], "\\ud83d": "\\ud83d\\ude00", "c": "\\\\ud83d"}')
    assert data == {"a": "x\ufffdy", "b": ["\ufffd"], "\ufffd": "\U0001f600", "c": "\\ud83d"}


def test_an_action_the_database_cannot_hold_is_not_stored_as_such(service: Service) -> None:
    payload = push_payload(sha_for("long action"))
    for action in ("x" * 300, "a\u0000b"):
        payload["action"] = action
        response = service.send("push", payload, route=False)
        assert response.status_code == 202, response.text
        row = WebhookDelivery.get_by_id(response.json()["delivery"])
        assert row.action is None


def _raw_get(service: Service, host: bytes, path: bytes = b"/") -> bytes:
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        connection.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("label", [b"a b", b"a/b", b"x@abc"])
def test_an_invalid_host_name_is_never_a_preview(service: Service, label: bytes) -> None:
    """The host name is read as werkzeug validates it: one it refuses goes to the app, not a preview."""
    answer = _raw_get(service, label + b"." + service.settings.preview_domain.encode())
    assert b"No ready deployment" not in answer
