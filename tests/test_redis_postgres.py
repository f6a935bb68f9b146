"""The push flow as the Procfile runs it: web app and `dramatiq tasks.worker` on Redis, data in PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import models
from models import Deployment, DeploymentStatus, WebhookDelivery
from tasks.broker import queue_namespace
from tests.conftest import Service, require, routed, tiny_site
from tests.payloads import REPO, push_payload, sha_for
from tests.services import (
    REDIS_URL,
    ROOT,
    WorkerProcess,
    drop_redis_keys,
    postgres_database,
    postgres_reachable,
    redis_reachable,
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require(postgres_reachable(), "PostgreSQL is not running on 127.0.0.1:5432 (see ../shared/INFRA.md)")
    with postgres_database() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    require(redis_reachable(), f"Redis is not running at {REDIS_URL} (see ../shared/INFRA.md)")
    return REDIS_URL


@pytest.fixture
def web(make_service: Callable[..., Service], postgres_url: str, redis_url: str) -> Iterator[Service]:
    """The web process alone: with REDIS_URL set it records and enqueues, and runs no worker."""
    service = make_service(database_url=postgres_url, redis_url=redis_url)
    yield service
    drop_redis_keys(queue_namespace(service.settings))


@pytest.fixture
def start_worker(web: Service, tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess.start(web.settings, tmp_path / f"worker-{len(started)}")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _wait(service: Service, deployment_id: str, worker: WorkerProcess) -> dict[str, object]:
    try:
        return service.wait(deployment_id, timeout=60)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- worker log ---\n{worker.log()[-4000:]}") from None


def test_push_flow_on_redis_and_postgres(web: Service, start_worker: Callable[[], WorkerProcess]) -> None:
    assert web.app.extensions["dyonisus"].workers == []
    assert isinstance(models.database.obj, models.peewee.PostgresqlDatabase)
    worker = start_worker()
    sha = sha_for("redis and postgres")
    deployment_id = web.push(sha, tiny_site("Built by the worker process"))
    data = _wait(web, deployment_id, worker)

    assert data["status"] == "READY", worker.log()[-4000:]
    assert [s["state"] for s in web.fake.statuses(sha)] == ["pending", "success"]
    page = web.preview(deployment_id)
    assert page.status_code == 200 and "Built by the worker process" in page.text
    with web.http() as client:
        assert "built dist" in client.get(f"/api/deploy/{deployment_id}/logs").text

    row = Deployment.get_by_id(deployment_id)
    assert row.worker_id.split(":")[1] != str(os.getpid()), "the build ran in the test process"
    name = models.database.execute_sql("SELECT current_database()").fetchone()[0]
    assert web.settings.database_url.endswith("/" + name)
    assert worker.stop() == 0


def test_duplicate_delivery_builds_once_on_postgres(web: Service, start_worker: Callable[[], WorkerProcess]) -> None:
    sha = sha_for("duplicate on postgres")
    web.fake.add_tarball(REPO, sha, tiny_site())
    first = web.send("push", push_payload(sha), delivery="delivery-on-postgres", route=False)
    again = web.send("push", push_payload(sha), delivery="delivery-on-postgres", route=False)
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["duplicate"] is True
    worker = start_worker()
    (deployment_id,) = routed(first).json()["deployments"]
    _wait(web, deployment_id, worker)
    assert Deployment.select().where(Deployment.commit_sha == sha).count() == 1
    assert [s["state"] for s in web.fake.statuses(sha)] == ["pending", "success"]


def test_pending_deployment_is_built_after_a_restart(web: Service, start_worker: Callable[[], WorkerProcess]) -> None:
    """The row is the durable record: a build message lost with Redis is sent again at start."""
    sha = sha_for("lost message")
    web.fake.add_tarball(REPO, sha, tiny_site("Recovered after a restart"))
    answer = web.send("push", push_payload(sha), delivery="lost-delivery", route=False)
    assert answer.status_code == 202
    namespace = queue_namespace(web.settings)
    # The stored delivery is the durable record; no message is needed to find it again.
    assert WebhookDelivery.get_by_id("lost-delivery").state == "received"
    drop_redis_keys(namespace)
    time.sleep(0.2)
    assert Deployment.select().count() == 0
    assert web.fake.statuses(sha) == []

    # The worker's poller routes it, then the build runs.
    worker = start_worker()
    (deployment_id,) = routed(answer).json()["deployments"]
    data = _wait(web, deployment_id, worker)
    assert data["status"] == "READY"
    assert [s["state"] for s in web.fake.statuses(sha)] == ["pending", "success"]
    assert "Recovered after a restart" in web.preview(deployment_id).text


def test_queues_of_two_instances_do_not_mix(
    web: Service, start_worker: Callable[[], WorkerProcess], tmp_path: Path
) -> None:
    """A worker of another instance (another database) never takes this instance's messages."""
    with postgres_database() as other_database:
        other = replace(web.settings, database_url=other_database, storage_url=str(tmp_path / "other-storage"))
        assert queue_namespace(other) != queue_namespace(web.settings)
        stranger = WorkerProcess.start(other, tmp_path / "stranger")
        try:
            stranger.wait_ready()
            sha = sha_for("own queue")
            web.fake.add_tarball(REPO, sha, tiny_site())
            answer = web.send("push", push_payload(sha), delivery="own-queue", route=False)
            time.sleep(2)
            # The other instance's worker reads another database: this delivery waits for ours.
            assert WebhookDelivery.get_by_id("own-queue").state == "received"
            assert Deployment.select().count() == 0
            assert web.fake.statuses(sha) == []
        finally:
            assert stranger.stop() == 0
            drop_redis_keys(queue_namespace(other))
    worker = start_worker()
    (deployment_id,) = routed(answer).json()["deployments"]
    assert _wait(web, deployment_id, worker)["status"] == "READY"


def test_concurrent_supersedes_do_not_deadlock(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pushes to one branch at once cancel the same older deployments; on PostgreSQL they
    must lock them in one order, or one webhook dies with `deadlock detected` (a 500 to GitHub).

    The second transaction is made to see the rows in another order than the first (an update
    moves a row to the end of the table), as the service's own updates do under load.
    """
    import threading

    import peewee

    from bot import deployments
    from bot.plan import branch_lane
    from core.timeutil import utcnow
    from models import Project

    models.connect(postgres_url)
    models.create_schema()
    lane = branch_lane("main")
    project = Project.create(owner_id="o", name="site", github_url="https://github.com/o/site", github_repo_id=7)
    older = [
        Deployment.create(project=project, commit_sha=sha_for(f"older {n}"), branch="main", lane=lane) for n in range(2)
    ]
    selected = {name: threading.Event() for name in ("first", "second")}
    go = {name: threading.Event() for name in ("first", "second")}
    arrived = {name: threading.Event() for name in ("first", "second")}
    calls: dict[str, int] = {}
    errors: list[BaseException] = []

    def paced_utcnow() -> object:
        # cancel_deployments asks for the time once per row, just before it updates that row.
        name = threading.current_thread().name
        calls[name] = calls.get(name, 0) + 1
        if calls[name] == 1:
            selected[name].set()
            go[name].wait(10)
        elif calls[name] == 2:
            other = "second" if name == "first" else "first"
            arrived[name].set()
            arrived[other].wait(3)  # both hold their first row now, unless one waits on the other
        return utcnow()

    monkeypatch.setattr(deployments, "utcnow", paced_utcnow)

    def push(name: str) -> None:
        try:
            with models.database.atomic():
                newer = Deployment.create(
                    project=project, commit_sha=sha_for(name), branch="main", lane=lane, created_at=utcnow()
                )
                deployments.supersede(project, lane, newer)
        except peewee.DatabaseError as error:
            errors.append(error)
        finally:
            models.database.close()

    first = threading.Thread(target=push, args=("first",), name="first")
    first.start()
    assert selected["first"].wait(10)
    # Move the older of the two to the end: the next snapshot lists them the other way round.
    for status in (DeploymentStatus.BUILDING, DeploymentStatus.PENDING):
        Deployment.update(status=status.value).where(Deployment.id == older[0].id).execute()
    second = threading.Thread(target=push, args=("second",), name="second")
    second.start()
    assert selected["second"].wait(10)
    go["first"].set()
    go["second"].set()
    first.join(30)
    second.join(30)

    assert not errors, errors
    assert {Deployment.get_by_id(d.id).status for d in older} == {DeploymentStatus.CANCELLED.value}


def test_processes_starting_together_create_the_schema_once() -> None:
    """The Procfile starts two web workers and a worker at once, each creating the schema on a
    new PostgreSQL database; concurrent CREATE … IF NOT EXISTS collide there unless serialized."""
    require(postgres_reachable(), "PostgreSQL is not running on 127.0.0.1:5432 (see ../shared/INFRA.md)")
    script = "import sys, models; models.connect(sys.argv[1]); sys.stdin.read(); models.create_schema(); print('ok')"
    for _attempt in range(2):
        with postgres_database() as url:
            starts = [
                subprocess.Popen(
                    [sys.executable, "-c", script, url],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(4)
            ]
            time.sleep(1)  # all have imported and connected; closing their stdin starts them together
            for process in starts:
                assert process.stdin is not None
                process.stdin.close()
                process.stdin = None  # communicate() must not touch it again
            results = [process.communicate(timeout=60) for process in starts]
            failures = [err.strip().splitlines()[-1] for out, err in results if out.strip() != "ok"]
            assert not failures, failures


def _drop_connections(database_url: str) -> int:
    """End every server process of this database, as a PostgreSQL restart or failover does."""
    import psycopg2

    admin = psycopg2.connect(database_url, connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            ended = cursor.fetchone()[0]
            cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (ended,))
            # pg_terminate_backend only signals; wait until those server processes are gone.
            deadline = time.monotonic() + 10
            while (
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (ended,))
                or (cursor.fetchone()[0])
            ):
                assert time.monotonic() < deadline, "PostgreSQL did not end the connections"
                time.sleep(0.05)
            return len(ended)
    finally:
        admin.close()


def test_embedded_service_recovers_when_postgres_drops_its_connections(
    make_service: Callable[..., Service], postgres_url: str
) -> None:
    """Connections of long-lived threads (the intake poller, the sweeper, the worker threads) die
    with a PostgreSQL restart; the next push must still be routed and built."""
    service = make_service(database_url=postgres_url)
    first = service.push(sha_for("before the restart"), tiny_site("Before"))
    assert service.wait(first, timeout=60)["status"] == "READY"
    assert _drop_connections(postgres_url) > 0

    deployment_id = _push_after_the_restart(service, sha_for("after the restart"))
    assert service.wait(deployment_id, timeout=60)["status"] == "READY"
    assert "After the restart" in service.preview(deployment_id).text


def test_worker_process_recovers_when_postgres_drops_its_connections(
    web: Service, start_worker: Callable[[], WorkerProcess]
) -> None:
    worker = start_worker()
    first = web.push(sha_for("worker before the restart"), tiny_site("Before"))
    assert _wait(web, first, worker)["status"] == "READY"
    assert _drop_connections(web.settings.database_url) > 0

    deployment_id = _push_after_the_restart(web, sha_for("worker after the restart"))
    assert _wait(web, deployment_id, worker)["status"] == "READY"


def _push_after_the_restart(service: Service, sha: str) -> str:
    """Push sha once the service takes deliveries again; the new deployment's id."""
    service.fake.add_tarball(REPO, sha, tiny_site("After the restart"))
    deadline = time.monotonic() + 30
    while (answer := service.send("push", push_payload(sha), route=False)).status_code == 503:
        # A web request that finds its connection dead answers 503 (GitHub can redeliver).
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    assert answer.status_code == 202, answer.text
    (deployment_id,) = routed(answer).json()["deployments"]
    return str(deployment_id)


def test_a_lost_connection_fails_its_transaction_and_the_next_statement_reconnects(postgres_url: str) -> None:
    """Nothing is replayed behind a transaction's back: the one cut off fails; what follows works."""
    import peewee

    models.connect(postgres_url)
    models.create_schema()
    database = models.database
    before = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with pytest.raises(peewee.DatabaseError), database.atomic():
        WebhookDelivery.create(delivery_id="cut-off", event="push", state="received")
        assert _drop_connections(postgres_url) == 1
        WebhookDelivery.create(delivery_id="after-the-cut", event="push", state="received")
    after = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    assert after != before
    assert WebhookDelivery.select().count() == 0

    # Idle and lost: replaced before the statement is sent, so the statement itself succeeds.
    assert _drop_connections(postgres_url) == 1
    WebhookDelivery.create(delivery_id="on-a-new-connection", event="push", state="received")
    assert [d.delivery_id for d in WebhookDelivery.select()] == ["on-a-new-connection"]
    database.close()


def test_a_burst_of_requests_leaves_few_idle_connections(postgres_url: str) -> None:
    """werkzeug's server runs each request on a new thread: after a burst, the pool keeps only
    POOL_MAX_IDLE connections open, not one per request; with ?max_connections=N set, a thread
    that finds none free gets a database error (the webhook's 503), not a ValueError."""
    import threading

    import peewee

    from models import postgres

    models.connect(postgres_url)
    database = models.database
    barrier = threading.Barrier(postgres.POOL_MAX_IDLE + 4)

    def request() -> None:
        database.execute_sql("SELECT 1")
        barrier.wait(10)  # all hold a connection at once
        database.close()

    threads = [threading.Thread(target=request) for _ in range(barrier.parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    # A server process ends a moment after its client closed the connection.
    deadline = time.monotonic() + 10
    while (backends := _backends(postgres_url)) > postgres.POOL_MAX_IDLE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends == postgres.POOL_MAX_IDLE

    capped = postgres.connect(postgres_url + "?max_connections=1&timeout=1")
    capped.execute_sql("SELECT 1")
    errors: list[BaseException] = []

    def second() -> None:
        try:
            capped.execute_sql("SELECT 1")
        except (peewee.DatabaseError, ValueError) as error:  # peewee's own pool raises ValueError
            errors.append(error)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], peewee.OperationalError), errors
    capped.close_all()
    database.close_all()


def _backends(database_url: str) -> int:
    import psycopg2

    admin = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(cursor.fetchone()[0])
    finally:
        admin.close()


def test_a_thread_that_ends_without_closing_leaves_no_connection_behind(postgres_url: str) -> None:
    """Threads that query and end (a build's heartbeat, werkzeug's request threads on an error
    path) give their connection back when they are gone."""
    import threading

    from models import postgres

    models.connect(postgres_url)
    for _ in range(3 * postgres.POOL_MAX_IDLE):
        thread = threading.Thread(target=lambda: models.database.execute_sql("SELECT 1"))
        thread.start()
        thread.join(10)
    models.database.execute_sql("SELECT 1")  # a check-out reclaims what ended threads held
    assert _backends(postgres_url) <= postgres.POOL_MAX_IDLE + 1
    models.database.close_all()


def test_a_transaction_whose_connection_was_lost_never_commits_on_a_new_one(postgres_url: str) -> None:
    """Even when the error inside was caught, the block's COMMIT must not go to a fresh connection
    (which would commit nothing and report success)."""
    import peewee

    models.connect(postgres_url)
    models.create_schema()
    database = models.database
    with pytest.raises(peewee.OperationalError, match="lost"), database.atomic():
        WebhookDelivery.create(delivery_id="written-first", event="push", state="routed")
        assert _drop_connections(postgres_url) == 1
        try:
            WebhookDelivery.create(delivery_id="after-the-loss", event="push", state="routed")
        except peewee.OperationalError:
            pass
    assert WebhookDelivery.select().count() == 0
    WebhookDelivery.create(delivery_id="next", event="push", state="routed")
    assert WebhookDelivery.select().count() == 1
    database.close_all()


def test_a_connection_replaced_inside_a_connection_context_closes_at_its_end(postgres_url: str) -> None:
    models.connect(postgres_url)
    database = models.database
    with database.connection_context():
        database.execute_sql("SELECT 1")
        assert _drop_connections(postgres_url) == 1
        database.execute_sql("SELECT 1")
    assert database.is_closed()
    database.close_all()


def _lose_connection_inside(database: Any, postgres_url: str) -> None:
    """End this thread's server process and let psycopg2 find out (a statement fails)."""
    import peewee

    assert _drop_connections(postgres_url) >= 1
    with pytest.raises(peewee.OperationalError):
        database.execute_sql("SELECT 1")


def test_a_lost_connection_leaves_the_blocks_transaction_methods_failing_not_autocommitting(postgres_url: str) -> None:
    """txn.commit() / txn.rollback() inside a block whose connection was lost keep the block's
    bookkeeping: later statements in the block fail too, and nothing of it is committed."""
    import peewee

    models.connect(postgres_url)
    models.create_schema()
    database = models.database
    for finish in ("commit", "rollback"):
        with pytest.raises(peewee.PeeweeException) as raised, database.atomic() as transaction:
            WebhookDelivery.create(delivery_id=f"{finish}-first", event="push", state="routed")
            _lose_connection_inside(database, postgres_url)
            with suppress(peewee.PeeweeException):
                getattr(transaction, finish)()
            WebhookDelivery.create(delivery_id=f"{finish}-second", event="push", state="routed")
        assert not isinstance(raised.value, IndexError)
        assert WebhookDelivery.select().count() == 0, finish
    with database.atomic():
        WebhookDelivery.create(delivery_id="next", event="push", state="routed")
    assert [d.delivery_id for d in WebhookDelivery.select()] == ["next"]
    database.close_all()


def test_a_block_that_failed_on_the_server_does_not_report_a_commit(postgres_url: str) -> None:
    """A statement error caught inside atomic() leaves the transaction failed; PostgreSQL turns
    the COMMIT into a ROLLBACK, and that must not look like success."""
    import peewee

    models.connect(postgres_url)
    models.create_schema()
    database = models.database
    with pytest.raises(peewee.OperationalError, match="failed"), database.atomic():
        WebhookDelivery.create(delivery_id="kept?", event="push", state="routed")
        with suppress(peewee.DataError):
            database.execute_sql("SELECT 1/0")
    assert WebhookDelivery.select().count() == 0
    database.close_all()


def test_the_blocks_own_error_surfaces_when_its_connection_was_lost(postgres_url: str) -> None:
    models.connect(postgres_url)
    database = models.database
    database.execute_sql("SELECT 1")
    with pytest.raises(ValueError, match="own"), database.atomic():
        database.execute_sql("SELECT 1")
        assert _drop_connections(postgres_url) == 1
        raise ValueError("own")
    database.execute_sql("SELECT 1")
    database.close_all()


def test_connection_context_counts_survive_a_rollback_on_a_lost_connection(postgres_url: str) -> None:
    import peewee

    models.connect(postgres_url)
    database = models.database
    with database.connection_context():
        with suppress(peewee.OperationalError), database.atomic():
            database.execute_sql("SELECT 1")
            _lose_connection_inside(database, postgres_url)
        database.execute_sql("SELECT 1")
    assert database.is_closed()
    database.close_all()


def test_percent_encoded_user_and_password_are_decoded(postgres_url: str) -> None:
    from models import postgres

    db = postgres.connect("postgresql://me%40server:p%40ss%2Fw@127.0.0.1:5432/app")
    assert db.connect_params["user"] == "me@server"
    assert db.connect_params["password"] == "p@ss/w"
