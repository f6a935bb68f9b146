"""Nothing is lost: a broker outage at intake, or a worker that died mid-build, is recovered."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.timeutil import utcnow
from models import Deployment, DeploymentStatus, WebhookDelivery
from tasks import deploy
from tests.conftest import Service, wait_for
from tests.payloads import REPO, push_payload, sha_for


def test_broker_outage_at_intake_keeps_the_deployment(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    original = deploy.build_deployment.send_with_options

    def broker_down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(deploy.build_deployment, "send_with_options", broker_down)
    sha = sha_for("outage")
    service.fake.add_tarball(REPO, sha, {"index.html": "kept"})
    response = service.send("push", push_payload(sha))
    assert response.status_code == 202
    (deployment_id,) = response.json()["deployments"]
    row = Deployment.get_by_id(deployment_id)
    assert row.status == "PENDING" and not row.enqueued

    monkeypatch.setattr(deploy.build_deployment, "send_with_options", original)
    Deployment.update(created_at=utcnow() - timedelta(minutes=1)).where(Deployment.id == deployment_id).execute()
    assert deploy.recover_deployments(at_start=False) == 1
    assert service.wait(deployment_id)["status"] == "READY"


def test_a_build_whose_worker_died_is_taken_over(service: Service) -> None:
    sha = sha_for("orphan")
    service.fake.add_tarball(REPO, sha, {"index.html": "taken over"})
    from bot.plan import repo_ref
    from bot.projects import create_deployment, upsert_project

    ref = repo_ref(push_payload(sha))
    assert ref is not None
    deployment = create_deployment(upsert_project(ref), sha=sha, branch="main", trigger="push")
    # A worker claimed it and vanished: its lease ran out.
    Deployment.update(
        status=DeploymentStatus.BUILDING.value,
        worker_id="dead-host:1:gone",
        lease_until=utcnow() - timedelta(seconds=5),
        started_at=utcnow() - timedelta(minutes=2),
    ).where(Deployment.id == deployment.id).execute()
    assert deploy.recover_deployments(at_start=False) == 1
    data = service.wait(deployment.id)
    assert data["status"] == "READY"
    assert service.preview(deployment.id).text == "taken over"


def test_a_live_lease_is_left_alone(service: Service) -> None:
    from bot.plan import repo_ref
    from bot.projects import create_deployment, upsert_project

    ref = repo_ref(push_payload(sha_for("held")))
    assert ref is not None
    deployment = create_deployment(upsert_project(ref), sha=sha_for("held"), branch="main", trigger="push")
    Deployment.update(
        status=DeploymentStatus.BUILDING.value, worker_id="other:2:alive", lease_until=utcnow() + timedelta(minutes=1)
    ).where(Deployment.id == deployment.id).execute()
    assert deploy.recover_deployments(at_start=False) == 0
    deploy.run_deployment(deploy.current(), deployment.id)
    assert Deployment.get_by_id(deployment.id).worker_id == "other:2:alive"


def test_a_burst_of_deliveries_routes_without_lock_failures(service: Service) -> None:
    """Routing and the webhook's inserts write at once; routing waits for the lock rather than
    failing with `database is locked` and spending one of its attempts."""
    for index in range(60):
        response = service.send("push", push_payload(sha_for(f"burst {index}")), route=False)
        assert response.status_code == 202
    wait_for(lambda: not WebhookDelivery.select().where(WebhookDelivery.state == "received").exists(), timeout=60)
    assert not WebhookDelivery.select().where(WebhookDelivery.attempts > 0).exists()
