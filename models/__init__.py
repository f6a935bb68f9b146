"""Peewee models: installations, projects, deployments, credentials and webhook deliveries."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import peewee
from playhouse import db_url
from playhouse.migrate import SchemaMigrator, migrate

from core.ids import new_id
from core.timeutil import utcnow

database = peewee.DatabaseProxy()

# The key of the PostgreSQL advisory lock that serializes schema changes ("dyon").
SCHEMA_LOCK_KEY = 0x64796F6E
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10_000,
    "synchronous": "normal",
    "foreign_keys": 1,
    # Checkpoints (copying the WAL into the database, with an fsync) run on a background thread
    # (checkpoint_wal); the commit that crosses this many pages (about 40 MB) does one itself.
    "wal_autocheckpoint": 10_000,
    "journal_size_limit": 64 * 1024 * 1024,
}


class DeploymentStatus(enum.StrEnum):
    PENDING = "PENDING"
    BUILDING = "BUILDING"
    READY = "READY"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (DeploymentStatus.READY, DeploymentStatus.FAILED, DeploymentStatus.CANCELLED)


class JSONField(peewee.TextField):
    """JSON kept as text, so that SQLite and PostgreSQL store it alike."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Installation(BaseModel):
    id = peewee.BigIntegerField(primary_key=True)
    account_login = peewee.CharField(default="")
    suspended = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)


class Project(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=63, default=new_id)
    owner_id = peewee.CharField()
    name = peewee.CharField()
    github_url = peewee.CharField()
    github_repo_id = peewee.BigIntegerField(unique=True)
    installation_id = peewee.BigIntegerField(null=True)
    default_branch = peewee.CharField(default="main")
    created_at = peewee.DateTimeField(default=utcnow)

    @property
    def full_name(self) -> str:
        return f"{self.owner_id}/{self.name}"


class Deployment(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=63, default=new_id)
    project = peewee.ForeignKeyField(Project, backref="deployments", column_name="project_id")
    project_id: str
    commit_sha = peewee.CharField(max_length=40)
    branch = peewee.CharField(null=True)
    status = peewee.CharField(default=DeploymentStatus.PENDING.value, index=True)
    provider = peewee.CharField(default="static")
    provider_meta = JSONField(null=True)
    artifact_key = peewee.CharField(null=True)
    logs_key = peewee.CharField(null=True)
    started_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    # What asked for the deployment: push, pull_request, rerun, command.
    trigger = peewee.CharField(default="push")
    pr_number = peewee.IntegerField(null=True)
    commit_message = peewee.TextField(default="")
    # How it ended on GitHub: success, failure, error, timed_out, cancelled, skipped.
    outcome = peewee.CharField(null=True)
    reason = peewee.TextField(null=True)
    check_run_id = peewee.BigIntegerField(null=True)
    attempts = peewee.IntegerField(default=0)
    # A worker holds a deployment while lease_until is in the future; see tasks.deploy.
    lease_until = peewee.DateTimeField(null=True)
    worker_id = peewee.CharField(null=True)
    cancel_requested = peewee.BooleanField(default=False)
    # Whether a build message was sent; recover_deployments() sends those never sent.
    enqueued = peewee.BooleanField(default=False)
    # Deployments of one lane (a branch, or a pull request) supersede each other.
    lane = peewee.CharField(default="", index=True)
    # The GitHub Deployments environment: Production, or Preview (pr-<n>) / Preview (<branch>).
    environment = peewee.CharField(default="")
    github_deployment_id = peewee.BigIntegerField(null=True)
    # Files the triggering push changed (None when unknown), for the `paths` filter.
    changed_paths = JSONField(null=True)
    # Where the source comes from when it is not the commit of the base repository itself.
    source_ref = peewee.CharField(null=True)
    from_fork = peewee.BooleanField(default=False)
    # The comment command that asked for this deployment (its reactions follow the result).
    command_comment_id = peewee.BigIntegerField(null=True)

    @property
    def state(self) -> DeploymentStatus:
        return DeploymentStatus(self.status)

    @property
    def sha7(self) -> str:
        return self.commit_sha[:7]


class PullRequest(BaseModel):
    id = peewee.AutoField()
    project = peewee.ForeignKeyField(Project, backref="pull_requests", column_name="project_id")
    project_id: str
    number = peewee.IntegerField()
    head_ref = peewee.CharField(default="")
    head_sha = peewee.CharField(default="")
    base_ref = peewee.CharField(default="")
    from_fork = peewee.BooleanField(default=False)
    state = peewee.CharField(default="open")
    # The sticky comment: its id, and a digest of the body last written (no edit when equal).
    comment_id = peewee.BigIntegerField(null=True)
    comment_digest = peewee.CharField(null=True)
    # Held while one worker writes the comment, so two events never post two comments.
    comment_lock_until = peewee.DateTimeField(null=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("project", "number"), True),)


class Alias(BaseModel):
    """A stable preview host label pointing at the newest READY deployment of its lane."""

    label = peewee.CharField(primary_key=True, max_length=63)
    project = peewee.ForeignKeyField(Project, backref="aliases", column_name="project_id")
    deployment = peewee.ForeignKeyField(Deployment, backref="aliases", column_name="deployment_id")
    deployment_id: str
    # The deployment's creation time: an alias only moves to a newer one.
    deployment_created_at = peewee.DateTimeField()
    kind = peewee.CharField()


class CommentCommand(BaseModel):
    """A command typed in a comment; the comment id makes it run once, however often delivered."""

    id = peewee.AutoField()
    project = peewee.ForeignKeyField(Project, backref="commands", column_name="project_id")
    project_id: str
    comment_id = peewee.BigIntegerField(unique=True)
    number = peewee.IntegerField()
    on_pull_request = peewee.BooleanField(default=True)
    author = peewee.CharField()
    name = peewee.CharField()
    args = peewee.CharField(default="")
    problem = peewee.TextField(null=True)
    ignored = peewee.IntegerField(default=0)
    # The pull request's head as the service knew it when the comment arrived.
    expected_sha = peewee.CharField(null=True)
    # queued, accepted, refused, invalid, done
    state = peewee.CharField(default="queued")
    attempts = peewee.IntegerField(default=0)
    reply_id = peewee.BigIntegerField(null=True)
    deployment_id = peewee.CharField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)


class ProviderCredential(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=63, default=new_id)
    user_id = peewee.CharField()
    provider = peewee.CharField()
    encrypted_data = peewee.TextField()
    created_at = peewee.DateTimeField(default=utcnow)


class WebhookDelivery(BaseModel):
    """A delivery as received; its id makes a redelivery a no-op, its payload waits to be routed."""

    delivery_id = peewee.CharField(primary_key=True, max_length=100)
    event = peewee.CharField()
    action = peewee.CharField(null=True)
    received_at = peewee.DateTimeField(default=utcnow)
    # received → routed (or failed); tasks.intake turns the payload into deployments.
    state = peewee.CharField(default="routed")
    payload = peewee.TextField(null=True)
    result = JSONField(null=True)
    attempts = peewee.IntegerField(default=0)

    class Meta:
        # The intake poller reads the oldest waiting rows; pruning the oldest routed ones.
        indexes = ((("state", "received_at"), False),)


# Indexes earlier versions made that the models no longer declare.
RETIRED_INDEXES = ("webhook_delivery_state",)  # on state alone; now on (state, received_at)
MODELS: list[type[BaseModel]] = [
    Installation,
    Project,
    Deployment,
    PullRequest,
    Alias,
    CommentCommand,
    ProviderCredential,
    WebhookDelivery,
]


def connect(url: str) -> peewee.Database:
    """Open the database named by DATABASE_URL and bind the models to it."""
    db = _database(url)
    database.initialize(db)
    return db


# What opening a database that cannot be used raises: a refused or failed connection, a
# parameter the driver rejects, a connection the driver finds closed.
DATABASE_ERRORS = (peewee.DatabaseError, peewee.InterfaceError)


def check_reachable(url: str) -> None:
    """Open the database once and close it again, binding nothing: one of DATABASE_ERRORS when it
    cannot be opened. For a process that forks afterwards (gunicorn's master): no connection of
    its own is left for the children to inherit."""
    db = _database(url)
    try:
        db.execute_sql("SELECT 1")
    finally:
        close_all = getattr(db, "close_all", None)
        db.close()
        if close_all is not None:
            close_all()  # the pool keeps what close() hands back


def _database(url: str) -> peewee.Database:
    if url.startswith("sqlite"):
        # BEGIN IMMEDIATE: a transaction takes the write lock when it starts, waiting for it in
        # the busy handler. A deferred one that reads first cannot take it later if another
        # connection wrote meanwhile, and fails at once with `database is locked`.
        return db_url.connect(url, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE")
    from models import postgres

    return postgres.connect(url)


def checkpoint_wal() -> None:
    """Copy what the SQLite write-ahead log holds into the database file, without waiting for
    readers or writers (a PASSIVE checkpoint), so that no request's commit has to. SQLite only:
    tasks.checkpoint runs it when the database is SQLite."""
    # The calling thread keeps its connection: closing the last one would checkpoint again.
    database.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")


def create_schema() -> None:
    """Create missing tables and add missing columns (additive migrations only)."""
    db = database.obj
    with db.connection_context(), _schema_lock(db):
        db.create_tables(MODELS, safe=True)
        migrator = SchemaMigrator.from_database(db)
        for model in MODELS:
            table = model._meta.table_name
            existing = {column.name for column in db.get_columns(table)}
            missing = [f for f in model._meta.sorted_fields if f.column_name not in existing]
            operations = [migrator.add_column(table, f.column_name, f) for f in missing]
            if operations:
                migrate(*operations)
        for index in RETIRED_INDEXES:
            db.execute_sql(f'DROP INDEX IF EXISTS "{index}"')


@contextmanager
def _schema_lock(db: peewee.Database) -> Iterator[None]:
    """One process at a time: the Procfile's processes start together, and PostgreSQL's
    CREATE … IF NOT EXISTS fails (duplicate key in pg_class) beside a concurrent twin."""
    if not isinstance(db, peewee.PostgresqlDatabase):
        yield
        return
    with db.atomic():
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        yield


def lease_expiry(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
