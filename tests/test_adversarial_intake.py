"""Hostile or malformed webhook deliveries: refused with a 4xx, never a 5xx, nothing stored."""

from __future__ import annotations

import json

from models import Deployment, WebhookDelivery
from tests.conftest import Service
from tests.payloads import push_payload, sha_for


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
