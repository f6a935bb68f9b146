"""A small synchronous event router: handlers register for an event and, optionally, an action."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq


@dataclass(frozen=True)
class Event:
    """One webhook delivery, after its signature was checked."""

    name: str
    delivery_id: str
    payload: dict[str, Any]

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) else None


@dataclass
class Outcome:
    """What handling an event asks of the caller once the transaction has committed."""

    builds: list[str] = field(default_factory=list)
    # Deployments recorded without a build (skipped); listed in the answer with the builds.
    recorded: list[str] = field(default_factory=list)
    jobs: list[tuple[dramatiq.Actor[Any, Any], tuple[Any, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: Outcome) -> None:
        self.builds.extend(other.builds)
        self.recorded.extend(other.recorded)
        self.jobs.extend(other.jobs)
        self.notes.extend(other.notes)

    def merged(self, other: Outcome) -> Outcome:
        self.merge(other)
        return self


Handler = Callable[[Event], Outcome | None]


class Router:
    def __init__(self, *routers: Router) -> None:
        self._handlers: dict[tuple[str, str | None], list[Handler]] = defaultdict(list)
        for router in routers:
            for key, handlers in router._handlers.items():
                self._handlers[key].extend(handlers)

    def register(self, event: str, action: str | None = None) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self._handlers[(event, action)].append(handler)
            return handler

        return decorator

    def events(self) -> set[str]:
        return {event for event, _ in self._handlers}

    def handles(self, event: Event) -> bool:
        return bool(self._handlers.get((event.name, None)) or self._handlers.get((event.name, event.action)))

    def dispatch(self, event: Event) -> Outcome:
        outcome = Outcome()
        keys = [(event.name, None)] + ([(event.name, event.action)] if event.action else [])
        for key in keys:
            for handler in self._handlers.get(key, []):
                result = handler(event)
                if result is not None:
                    outcome.merge(result)
        return outcome
