"""The Dyonisus Deploy service: `create_app()` for gunicorn, `python app.py` for everything in one."""

from __future__ import annotations

import logging
import socket
import sys
from dataclasses import dataclass, field

import dramatiq
import peewee
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from bot import webhook
from core.errors import ConfigError, DeployError
from core.settings import Settings, database_problem, describe, redact_url
from models import DATABASE_ERRORS, database
from tasks.bootstrap import bootstrap
from tasks.broker import redis_problem, start_embedded_worker
from tasks.checkpoint import checkpoint_loop
from tasks.deploy import recover_deployments
from tasks.intake import intake_loop
from tasks.loop import Loop
from tasks.sweeper import sweeper_loop
from web import api, pages, setup
from web.preview import install_preview_host
from web.urls import preview_label

log = logging.getLogger("dyonisus")


@dataclass
class Services:
    """The background parts an app started; stop() ends them (tests, shutdown)."""

    broker: dramatiq.Broker
    workers: list[dramatiq.Worker] = field(default_factory=list)
    sweeper: Loop | None = None
    intake: Loop | None = None
    checkpoint: Loop | None = None
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.intake:
            self.intake.stop()
        if self.sweeper:
            self.sweeper.stop()
        if self.checkpoint:
            self.checkpoint.stop()
        for worker in self.workers:
            worker.stop(timeout=10_000)
        self.broker.close()


def create_app(settings: Settings | None = None, *, start_worker: bool | None = None) -> Flask:
    """Build the app. With no REDIS_URL the Dramatiq worker runs in this process."""
    settings = settings or Settings.from_env()
    broker = bootstrap(settings)
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = webhook.MAX_PAYLOAD_BYTES + 1024 * 1024
    services = Services(broker=broker)
    checkpoint = checkpoint_loop()
    services.checkpoint = checkpoint.start() if checkpoint else None
    if settings.embedded_worker if start_worker is None else start_worker:
        services.workers = [start_embedded_worker(broker, threads=settings.worker_concurrency)]
        recover_deployments(at_start=True)
        services.intake = intake_loop().start()
        services.sweeper = sweeper_loop().start()
    app.extensions["dyonisus"] = services
    install_preview_host(app)
    app.register_blueprint(webhook.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(setup.blueprint)
    _install_connection_handling(app)
    _install_error_pages(app)
    return app


def _install_connection_handling(app: Flask) -> None:
    # A request thread connects with its first query. SQLite: each thread keeps its connection
    # (it is closed when the thread ends), since closing the last one checkpoints the WAL into the
    # database file, with a sync, which per request costs more than the request. Other databases:
    # the connection is closed when the request ends.
    if isinstance(database.obj, peewee.SqliteDatabase):
        return

    @app.teardown_request
    def close_database(_error: BaseException | None) -> None:
        if not database.is_closed():
            database.close()


def _install_error_pages(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response | HTTPException:
        settings: Settings = app.config["SETTINGS"]
        if request.path.startswith("/api/") and preview_label(settings, request.host) is None:
            response = jsonify({"error": error.name.lower().replace(" ", "_"), "message": error.description})
            response.status_code = error.code or 500
            return response
        return error


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        socket.getaddrinfo(settings.host, settings.port)
        app = create_app(settings)
    except ConfigError as error:
        print(f"dyonisus: configuration error: {error}", file=sys.stderr)
        return 2
    except socket.gaierror as error:
        assert settings is not None
        print(f"dyonisus: cannot listen on HOST={settings.host} PORT={settings.port}: {error}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as error:
        assert settings is not None
        print(database_problem(settings, error), file=sys.stderr)
        return 2
    except DeployError as error:
        print(f"dyonisus: cannot start: {error}", file=sys.stderr)
        return 2
    log.info("starting on http://%s:%d (%s)", settings.host, settings.port, describe(settings))
    if not settings.github_configured:
        log.warning("no GitHub App is configured yet: see %s/ for how to register one", settings.public_url)
    if settings.redis_url:
        log.info(
            "REDIS_URL is set, so no worker runs in this process: deliveries are stored here and "
            "routed and built by `dramatiq tasks.worker` processes (the Procfile's worker)"
        )
        problem = redis_problem(settings.redis_url)
        if problem:
            log.warning(
                "REDIS_URL=%s cannot be reached (%s): deliveries are still stored, and are built once it answers",
                redact_url(settings.redis_url),
                problem,
            )
    try:
        from werkzeug.serving import run_simple

        run_simple(settings.host, settings.port, app, threaded=True)
    finally:
        app.extensions["dyonisus"].stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
