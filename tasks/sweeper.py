"""A background thread that re-sends deployments and commands no live job holds, and forgets
deliveries older than GitHub's redelivery window."""

from __future__ import annotations

import logging

from tasks.commands import recover_commands
from tasks.deploy import recover_deployments
from tasks.intake import KEEP_ROUTED, prune_deliveries
from tasks.loop import Loop

log = logging.getLogger(__name__)
SWEEP_SECONDS = 15.0


def sweep() -> bool:
    sent = recover_deployments(at_start=False) + recover_commands()
    if sent:
        log.warning("sent %d deployment(s) or command(s) that no job held", sent)
    pruned = prune_deliveries()
    if pruned:
        log.info("forgot %d routed deliveries older than %s", pruned, KEEP_ROUTED)
    return False


def sweeper_loop() -> Loop:
    return Loop("sweeper", sweep, interval=SWEEP_SECONDS)
