"""How a delivery is stored: on disk before the answer, from several processes at once, never lost."""

from __future__ import annotations

import gc
import json
import multiprocessing
import runpy
import uuid
from pathlib import Path

import models
from models import Deployment, WebhookDelivery, database
from tasks.checkpoint import checkpoint_loop
from tests.conftest import Service
from tests.payloads import push_payload, sha_for
from tests.services import ROOT


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
