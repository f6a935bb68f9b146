"""The one broker module: Redis when REDIS_URL is set, in-process otherwise.

Actors are declared at import on a placeholder broker and bound to the real one by
setup_broker(), so that app factories and tests can build brokers after import
(Dramatiq binds actors at decoration time; see its issues #102 and #163).
"""

from __future__ import annotations

import hashlib

import dramatiq
from dramatiq.brokers.stub import StubBroker

from core.settings import Settings

UNBOUND = StubBroker()
dramatiq.set_broker(UNBOUND)


def queue_namespace(settings: Settings) -> str:
    """Instances that keep different databases never read each other's messages."""
    digest = hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
    return f"dyonisus-{digest}"


def setup_broker(settings: Settings) -> dramatiq.Broker:
    """Create the broker for these settings and bind every actor to it."""
    broker: dramatiq.Broker
    if settings.redis_url:
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=settings.redis_url, namespace=queue_namespace(settings))
    else:
        broker = StubBroker()
    dramatiq.set_broker(broker)
    for actor in list(UNBOUND.actors.values()):
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


def start_embedded_worker(broker: dramatiq.Broker, *, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


def redis_problem(url: str) -> str | None:
    """Why Redis at url does not answer a PING within two seconds; None when it does."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        return str(error) or type(error).__name__
    finally:
        client.close()
    return None
