"""The webhook receiver: signatures, pings, duplicates and pushes that build nothing."""

from __future__ import annotations

import json

from models import Deployment, WebhookDelivery
from tests.conftest import WEBHOOK_SECRET, Service
from tests.payloads import branch_deleted_payload, load, push_payload, sha_for, sign


def test_github_test_vector_signature() -> None:
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    assert sign("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_bad_signature_is_refused_and_nothing_is_stored(service: Service) -> None:
    response = service.send("push", push_payload(sha_for("x")), secret="not the secret")
    assert response.status_code == 401
    assert "signature" in response.json()["message"]
    assert Deployment.select().count() == 0 and WebhookDelivery.select().count() == 0
    assert not service.fake.calls


def test_missing_signature_is_refused(service: Service) -> None:
    body = json.dumps(push_payload(sha_for("x"))).encode()
    with service.http() as client:
        response = client.post("/api/github/webhooks", content=body, headers={"X-GitHub-Event": "push"})
    assert response.status_code == 401
    assert Deployment.select().count() == 0


def test_legacy_sha1_signature_alone_is_refused(service: Service) -> None:
    import hashlib
    import hmac

    body = json.dumps(push_payload(sha_for("x"))).encode()
    legacy = "sha1=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha1).hexdigest()
    with service.http() as client:
        response = client.post(
            "/api/github/webhooks",
            content=body,
            headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1", "X-Hub-Signature": legacy},
        )
    assert response.status_code == 401
    assert Deployment.select().count() == 0


def test_signature_over_other_bytes_is_refused(service: Service) -> None:
    body = json.dumps(push_payload(sha_for("x"))).encode()
    response = service.send("push", body, headers={"X-Hub-Signature-256": sign(WEBHOOK_SECRET, body + b" ")})
    assert response.status_code == 401


def test_ping_answers_200(service: Service) -> None:
    response = service.send("ping", load("ping"))
    assert response.status_code == 200
    assert response.json()["message"] == "pong"


def test_unhandled_event_is_accepted_and_ignored(service: Service) -> None:
    response = service.send("deployment_status", {"action": "created", "deployment_status": {}})
    assert response.status_code == 202
    assert "ignored" in response.json()["message"]


def test_malformed_body_is_a_400(service: Service) -> None:
    response = service.send("push", b"{not json")
    assert response.status_code == 400
    response = service.send("push", b"[1, 2]")
    assert response.status_code == 400


def test_missing_delivery_header_is_a_400(service: Service) -> None:
    body = json.dumps(push_payload(sha_for("x"))).encode()
    with service.http() as client:
        response = client.post(
            "/api/github/webhooks",
            content=body,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body)},
        )
    assert response.status_code == 400


def test_duplicate_delivery_creates_one_deployment(service: Service) -> None:
    sha = sha_for("dup")
    service.fake.add_tarball("Codertocat/Hello-World", sha, {"index.html": "<h1>hi</h1>"})
    first = service.send("push", push_payload(sha), delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    again = service.send("push", push_payload(sha), delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert Deployment.select().count() == 1
    service.wait(first.json()["deployments"][0])


def test_branch_deletion_builds_nothing(service: Service) -> None:
    response = service.send("push", branch_deleted_payload())
    assert response.status_code == 202
    assert "branch deleted" in response.json()["message"]
    assert Deployment.select().count() == 0


def test_tag_push_builds_nothing(service: Service) -> None:
    payload = push_payload(sha_for("tag"))
    payload["ref"] = "refs/tags/v1.0.0"
    response = service.send("push", payload)
    assert response.status_code == 202
    assert Deployment.select().count() == 0
    tag_deleted = service.send("push", load("push.tag-deleted"))
    assert tag_deleted.status_code == 202
    assert Deployment.select().count() == 0
    assert not service.fake.calls


def test_form_encoded_delivery_is_understood(service: Service) -> None:
    from urllib.parse import urlencode

    sha = sha_for("form")
    service.fake.add_tarball("Codertocat/Hello-World", sha, {"index.html": "<h1>form</h1>"})
    body = urlencode({"payload": json.dumps(push_payload(sha))}).encode()
    response = service.send("push", body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 202
    service.wait(response.json()["deployments"][0])


def test_unknown_deployment_is_a_json_404(service: Service) -> None:
    with service.http() as client:
        response = client.get("/api/deploy/cdoesnotexist")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        assert client.get("/healthz").json() == {"status": "ok"}


def test_unregistered_service_refuses_webhooks(make_service) -> None:  # type: ignore[no-untyped-def]
    service = make_service(github_app_id=None, github_private_key=None, github_webhook_secret=None)
    response = service.send("push", push_payload(sha_for("x")))
    assert response.status_code == 503
    with service.http() as client:
        assert "Register the GitHub App" in client.get("/").text
