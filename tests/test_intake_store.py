"""How a delivery is stored: on disk before the answer, from several processes at once, never lost."""

from __future__ import annotations

import gc
import json
import multiprocessing
import runpy
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import models
from models import Deployment, WebhookDelivery, database
from tasks.checkpoint import checkpoint_loop
from tasks.intake import waiting_query
from tests.conftest import Service, require
from tests.payloads import push_payload, sha_for
from tests.services import ROOT, postgres_database, postgres_reachable


def test_json_the_fast_parser_refuses_is_still_accepted(service: Service) -> None:
    """orjson refuses lone surrogate escapes: the standard parser decides then, and the lone
    surrogate is replaced before anything stores or sends it."""
    sha = sha_for("surrogate")
    service.fake.add_tarball("Codertocat/Hello-World", sha, {"index.html": "<h1>hi</h1>"})
    payload = push_payload(sha, message="MARK")
    payload["sender"]["extra"] = 10**30
    body = json.dumps(payload).replace("MARK", "Fix \\\\ud83d emoji \\ud83d").encode()
    response = service.send("push", body)
    assert response.status_code == 202, response.text
    (deployment_id,) = response.json()["deployments"]
    assert service.wait(deployment_id)["status"] == "READY"
    assert Deployment.get_by_id(deployment_id).commit_sha == sha
    assert WebhookDelivery.select().where(WebhookDelivery.state == "routed").count() == 1


def test_a_database_fault_at_intake_is_a_503_with_the_reason(service: Service) -> None:
    database.execute_sql('ALTER TABLE "webhook_delivery" RENAME TO "webhook_delivery_away"')
    try:
        response = service.send("push", push_payload(sha_for("fault")), route=False)
    finally:
        database.execute_sql('ALTER TABLE "webhook_delivery_away" RENAME TO "webhook_delivery"')
    assert response.status_code == 503
    assert "could not be stored" in response.json()["message"]
    again = service.send("push", push_payload(sha_for("fault")), route=False)
    assert again.status_code == 202


def _store_many(database_url: str, prefix: str, count: int) -> None:
    from bot import deliveries
    from core.timeutil import utcnow

    models.connect(database_url)
    for index in range(count):
        received_at = WebhookDelivery.received_at.db_value(utcnow())
        assert deliveries.store((f"{prefix}-{index}", "push", None, received_at, "received", "{}", 0))
        # Every other row is a redelivery, from the other process too.
        assert not deliveries.store((f"{prefix}-{index}", "push", None, received_at, "received", "{}", 0))


def test_processes_storing_at_once_lose_nothing(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/intake.db"
    models.connect(database_url)
    models.create_schema()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_store_many, args=(database_url, f"p{n}", 150)) for n in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert WebhookDelivery.select().count() == 450


def test_the_write_ahead_log_is_checkpointed_off_the_request_path(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    models.connect(f"sqlite:///{path}")
    models.create_schema()
    assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] >= 10_000
    loop = checkpoint_loop()
    assert loop is not None
    for _ in range(50):
        WebhookDelivery.create(delivery_id=str(uuid.uuid4()), event="push", state="received", payload="x" * 8000)
    assert path.stat().st_size < 50 * 8000  # the rows are in the log only
    loop.step()
    assert path.stat().st_size > 50 * 8000  # and now in the database file


def test_gunicorn_workers_freeze_the_loaded_app() -> None:
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert settings["worker_tmp_dir"] == "/dev/shm"
    gc.unfreeze()
    try:
        settings["post_worker_init"](None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert (ROOT / "Procfile").read_text().startswith("web: gunicorn --config gunicorn.conf.py ")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/prune.db"
        return
    require(postgres_reachable(), "PostgreSQL is not running on 127.0.0.1:5432 (see ../shared/INFRA.md)")
    with postgres_database() as url:
        yield url


def test_routed_deliveries_are_forgotten_after_githubs_redelivery_window(database_url: str) -> None:
    """Routed rows stay long enough to spot any redelivery GitHub can still make, then go; rows
    still waiting or that failed to route stay."""
    from datetime import timedelta

    from core.timeutil import utcnow
    from tasks.intake import KEEP_ROUTED, prune_deliveries

    models.connect(database_url)
    models.create_schema()
    now = utcnow()
    assert timedelta(days=7) <= KEEP_ROUTED  # GitHub Enterprise Server redelivers up to 7 days back
    old, recent = now - KEEP_ROUTED - timedelta(minutes=1), now - KEEP_ROUTED + timedelta(minutes=1)
    rows = [(f"old-{n}", "routed", old) for n in range(1203)]
    rows += [("recent", "routed", recent), ("old-waiting", "received", old), ("old-failed", "failed", old)]
    for delivery_id, state, received_at in rows:
        WebhookDelivery.create(delivery_id=delivery_id, event="push", state=state, received_at=received_at)

    assert prune_deliveries(now=now) == 1203
    assert sorted(d.delivery_id for d in WebhookDelivery.select()) == ["old-failed", "old-waiting", "recent"]
    assert prune_deliveries(now=now) == 0
    database.close()


def test_the_sweeper_prunes_deliveries(service: Service) -> None:
    from datetime import timedelta

    from core.timeutil import utcnow
    from tasks.intake import KEEP_ROUTED
    from tasks.sweeper import sweep

    WebhookDelivery.create(
        delivery_id="long-ago", event="push", state="routed", received_at=utcnow() - KEEP_ROUTED - timedelta(hours=1)
    )
    sweep()
    assert WebhookDelivery.get_or_none(WebhookDelivery.delivery_id == "long-ago") is None


def test_waiting_deliveries_are_found_by_an_index(database_url: str) -> None:
    """The poller's query (every 50 ms) and the pruning both read an index on (state, received_at),
    not the whole table, and a database made before that index loses its old one on `state`."""
    import peewee

    class EarlierDelivery(peewee.Model):
        """webhook_delivery as the version before this index declared it."""

        delivery_id = peewee.CharField(primary_key=True, max_length=100)
        event = peewee.CharField()
        action = peewee.CharField(null=True)
        received_at = peewee.DateTimeField()
        state = peewee.CharField(default="routed", index=True)
        payload = peewee.TextField(null=True)
        result = peewee.TextField(null=True)
        attempts = peewee.IntegerField(default=0)

        class Meta:
            database = models.database
            legacy_table_names = False
            table_name = "webhook_delivery"

    models.connect(database_url)
    EarlierDelivery.create_table()
    before = {index.name for index in database.get_indexes("webhook_delivery")}
    assert set(models.RETIRED_INDEXES) & before, before
    models.create_schema()
    indexes = {index.name: index.columns for index in database.get_indexes("webhook_delivery")}
    assert ["state", "received_at"] in indexes.values()
    assert not set(models.RETIRED_INDEXES) & set(indexes), indexes

    if database_url.startswith("sqlite"):
        sql, params = waiting_query().sql()
        plan = " ".join(str(row[-1]) for row in database.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
        assert "INDEX webhook_delivery_state_received_at" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    database.close()


def test_a_delivery_that_cannot_be_routed_is_shown_and_can_be_redelivered(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery whose routing keeps failing ends `failed`, with the reason on the home page;
    once the cause is gone, GitHub's redelivery (same X-GitHub-Delivery) routes and builds it
    instead of being answered as a duplicate."""
    from bot import webhook
    from tests.conftest import routed, wait_for

    sha = sha_for("cannot be routed")
    service.fake.add_tarball("Codertocat/Hello-World", sha, {"index.html": "<h1>at last</h1>"})
    dispatch = webhook.ROUTER.dispatch

    def broken(event: object) -> object:
        raise RuntimeError("the router broke")

    monkeypatch.setattr(webhook.ROUTER, "dispatch", broken)
    first = service.send("push", push_payload(sha), delivery="stuck-delivery", route=False)
    assert first.status_code == 202
    wait_for(lambda: WebhookDelivery.get_by_id("stuck-delivery").state == "failed")
    assert Deployment.select().count() == 0
    with service.http() as client:
        home = client.get("/").text
    assert "stuck-delivery" in home and "RuntimeError: the router broke" in home

    monkeypatch.setattr(webhook.ROUTER, "dispatch", dispatch)
    again = service.send("push", push_payload(sha), delivery="stuck-delivery", route=False)
    assert again.status_code == 202, again.text
    (deployment_id,) = routed(again).json()["deployments"]
    assert service.wait(deployment_id)["status"] == "READY"
    repeat = service.send("push", push_payload(sha), delivery="stuck-delivery", route=False)
    assert repeat.status_code == 200 and repeat.json()["duplicate"] is True
    with service.http() as client:
        assert "stuck-delivery" not in client.get("/").text


def test_only_a_failed_delivery_is_taken_again(database_url: str) -> None:
    from bot import deliveries

    models.connect(database_url)
    models.create_schema()
    for state in ("received", "routed", "failed"):
        WebhookDelivery.create(delivery_id=state, event="push", state=state, attempts=5, result={"error": "x"})
    again = {
        state: deliveries.store((state, "push", None, "2026-12-03 10:00:00", "received", '{"new": true}', 0))
        for state in ("received", "routed", "failed", "new")
    }
    assert again == {"received": False, "routed": False, "failed": True, "new": True}
    revived = WebhookDelivery.get_by_id("failed")
    assert (revived.state, revived.attempts, revived.result, revived.payload) == ("received", 0, None, '{"new": true}')
    assert WebhookDelivery.get_by_id("routed").state == "routed"
    database.close()
