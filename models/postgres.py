"""PostgreSQL databases whose connections outlive a server restart.

Every thread keeps its connection: the web process's request threads through the pool, the
intake poller, the sweeper and the worker threads for as long as they run. A restart or failover
of PostgreSQL (or an administrator's pg_terminate_backend) ends those connections on the server,
and psycopg2 notices only when the next statement fails; without this, a long-lived thread
would fail every statement from then on and no delivery would be routed again.

Before a statement that starts a unit of work (none is open on the connection), a lost
connection is replaced. A connection is lost when psycopg2 knows it is closed, or when the server
has written to it or closed it while it was idle: the server never writes unasked to an idle
session of ours (the service does not LISTEN), but it does write the FATAL message it sends when
it ends one. Checking costs a poll(2) with no wait, not a round trip. A connection lost in the
middle of a transaction fails that transaction, as it must, COMMIT included (it is never sent on
a new connection); the next unit of work gets a new connection.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import peewee
import psycopg2.extensions
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

# Connections a process keeps open while no thread uses them: a burst of requests on werkzeug's
# thread-per-request server must not leave a server process per request behind. Threads that run
# for as long as the process (worker threads, loops) hold theirs and are not counted.
POOL_MAX_IDLE = 8
# With ?max_connections=N in the URL, a thread waits this long for a free connection.
POOL_WAIT_SECONDS = 2
# A pooled connection is opened again after this long, so that none lives for ever.
POOL_STALE_SECONDS = 3600


def connection_lost(conn: Any) -> bool:
    """Whether an idle psycopg2 connection can no longer be used."""
    if conn.closed:
        return True
    if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return False  # a statement is under way or a transaction open: its own error will tell
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class PooledPostgresDatabase(PooledPostgresqlDatabase):
    """Connections kept in a pool between requests, replaced when they were lost.

    Unlike peewee's pool it sets no limit on connections in use by default (a thread that runs
    for the process's life holds one), keeps at most POOL_MAX_IDLE idle ones, and takes back the
    connection of a thread that ended without closing it."""

    def __init__(self, database: str, *, max_idle: int = POOL_MAX_IDLE, **kwargs: Any) -> None:
        self.max_idle = int(max_idle)
        self._owners: dict[int, threading.Thread] = {}
        super().__init__(database, **kwargs)

    def connect(self, reuse_if_open: bool = False) -> bool:
        state = self._state
        ctx = state.ctx
        try:
            return bool(super().connect(reuse_if_open))
        except MaxConnectionsExceeded as error:
            # A database error like any other: the webhook answers 503, a loop tries again.
            raise peewee.OperationalError(f"no free database connection: {error}") from None
        finally:
            state.ctx = ctx  # peewee empties it; an open connection_context() still counts

    def cursor(self, named_cursor: Any = None) -> Any:
        state = self._state
        if not state.closed and not state.transactions and not _finishing(state) and connection_lost(state.conn):
            self._drop_connection()
            self.connect()
        return super().cursor(named_cursor)

    def commit(self) -> None:
        state = self._state
        conn = None if state.closed else state.conn
        if conn is not None and conn.closed:
            # The transaction's own connection is gone, and the server rolled it back: COMMIT
            # on a new connection would commit nothing and report success. Inside the block
            # the lost connection stays, so that what follows in it fails too.
            if not state.transactions:
                self._drop_connection()
            raise peewee.OperationalError("the database connection was lost: the transaction was rolled back")
        if conn is not None and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INERROR:
            raise peewee.OperationalError(
                "the transaction failed (an error inside it was caught): PostgreSQL rolls it back at COMMIT"
            )
        with _finishing_on(state):
            super().commit()

    def rollback(self) -> None:
        state = self._state
        if state.closed:
            return  # dropped with its lost connection: the server rolled back already
        if not state.conn.closed:
            try:
                with _finishing_on(state):
                    super().rollback()
                return
            except (peewee.OperationalError, peewee.InterfaceError):
                if not state.conn.closed:
                    raise
        # The connection is gone, and with it the transaction: the error that led here (the
        # block's own) is the one to see, not the failed ROLLBACK's.
        if not state.transactions:
            self._drop_connection()

    def _drop_connection(self) -> None:
        """Forget this thread's lost connection, keeping any connection_context() count."""
        state = self._state
        with self._lock:
            lost, ctx = state.conn, state.ctx
            state.reset()
            state.ctx = ctx
            try:
                self._discard(lost)
            except psycopg2.Error:
                pass  # it is gone either way

    def _connect(self) -> Any:
        with self._pool_lock:
            self._reclaim_orphans()
            conn = super()._connect()
            self._owners[self.conn_key(conn)] = threading.current_thread()
            return conn

    def _reclaim_orphans(self) -> None:
        """Close the connections of threads that ended holding one (peewee's pool keeps them)."""
        for key, owner in list(self._owners.items()):
            if not owner.is_alive() and key in self._in_use:
                self._close(self._in_use[key].connection, close_conn=True)

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        with self._pool_lock:
            self._owners.pop(self.conn_key(conn), None)
            super()._close(conn, close_conn=close_conn or len(self._connections) >= self.max_idle)

    def _is_closed(self, conn: Any) -> bool:
        # peewee's own check asks the server (SELECT 1) at every check-out: a round trip per request.
        return connection_lost(conn)

    def _discard(self, conn: Any) -> None:
        self._close(conn, close_conn=True)


def _finishing(state: Any) -> bool:
    return bool(getattr(state, "finishing", False))


@contextmanager
def _finishing_on(state: Any) -> Iterator[None]:
    """While COMMIT or ROLLBACK is sent, the connection is never replaced under it."""
    state.finishing = True
    try:
        yield
    finally:
        state.finishing = False


def connect(url: str) -> PooledPostgresDatabase:
    """The database of a postgres:// or postgresql:// URL (+pool is accepted and means the same).

    Connections are pooled in every case: a new one costs the server a process and the request
    some milliseconds. The URL's query may set max_connections (none by default), max_idle,
    timeout and stale_timeout."""
    scheme, _, rest = url.partition("://")
    params: dict[str, Any] = db_url.parse(
        scheme.removesuffix("+pool") + "://" + rest, unquote_user=True, unquote_password=True
    )
    if not params.get("database"):
        raise ValueError("the PostgreSQL URL names no database")
    params.setdefault("max_connections", None)
    params.setdefault("timeout", POOL_WAIT_SECONDS)
    params.setdefault("stale_timeout", POOL_STALE_SECONDS)
    return PooledPostgresDatabase(**params)
