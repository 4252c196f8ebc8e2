"""The host worker's periodic tasks, declared as data (in the manner of arq's cron jobs) and run by one loop.

A task is a round to run every ``interval`` seconds. ``run_periodic`` runs a round, then waits the interval
or until ``stopping`` is set, and so on until it is set (or the loop is cancelled). A round never ends the
loop: an error the task expects (``retry_on``) is logged as "<name> failed; will retry", any other with its
traceback as "<name> crashed; will retry", and the next round comes at its usual time. ``close``, when
given, runs once the loop ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.observability import get_logger, log_event

logger = get_logger("worker")


@dataclass(frozen=True)
class PeriodicTask:
    name: str  # what the logs call one round
    interval: float  # seconds from the end of one round to the start of the next
    run: Callable[[], Awaitable[object]]
    # Failures a later round may well not see again: logged without a traceback.
    retry_on: tuple[type[Exception], ...] = ()
    close: Callable[[], Awaitable[None]] | None = None


async def run_periodic(task: PeriodicTask, stopping: asyncio.Event) -> None:
    """Run ``task``'s rounds every ``task.interval`` seconds until ``stopping`` is set (or cancelled)."""
    try:
        while not stopping.is_set():
            try:
                await task.run()
            except task.retry_on as exc:
                log_event(logger, f"{task.name} failed; will retry", error=str(exc))
            except Exception:
                logger.exception("%s crashed; will retry", task.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), task.interval)
    finally:
        if task.close is not None:
            await task.close()
