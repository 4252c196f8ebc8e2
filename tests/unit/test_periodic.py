"""The worker's periodic-task runner: rounds repeat at their interval, a failed round never ends the loop, and
the task's close runs however the loop ends."""

from __future__ import annotations

import asyncio
import logging

import pytest

from worker.periodic import PeriodicTask, run_periodic


class Rounds:
    """A task's round that fails as told, then stops the loop after ``stop_after`` rounds."""

    def __init__(self, stopping: asyncio.Event, failures: list[Exception | None], stop_after: int) -> None:
        self.stopping = stopping
        self.failures = failures
        self.stop_after = stop_after
        self.count = 0
        self.closed = 0

    async def run(self) -> None:
        self.count += 1
        if self.count >= self.stop_after:
            self.stopping.set()
        failure = self.failures[self.count - 1] if self.count <= len(self.failures) else None
        if failure is not None:
            raise failure

    async def close(self) -> None:
        self.closed += 1


async def test_failed_and_crashed_rounds_are_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a task whose first round fails as expected and whose second crashes
    stopping = asyncio.Event()
    rounds = Rounds(stopping, [ConnectionError("db down"), KeyError("bug")], stop_after=3)
    task = PeriodicTask("sweep", 0.01, rounds.run, retry_on=(ConnectionError,), close=rounds.close)

    # WHEN it runs until its third round stops it
    with caplog.at_level(logging.INFO, logger="worker"):
        await asyncio.wait_for(run_periodic(task, stopping), 5)

    # THEN every round ran, each failure was logged its own way, and close ran once
    assert rounds.count == 3
    assert rounds.closed == 1
    failed = [record for record in caplog.records if record.getMessage() == "sweep failed; will retry"]
    crashed = [record for record in caplog.records if record.getMessage() == "sweep crashed; will retry"]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert len(crashed) == 1 and crashed[0].exc_info is not None


async def test_a_stop_ends_the_wait_between_rounds_at_once() -> None:
    # GIVEN a task with a long interval, after its first round
    stopping = asyncio.Event()
    rounds = Rounds(stopping, [], stop_after=1000)
    loop = asyncio.create_task(run_periodic(PeriodicTask("slow", 3600, rounds.run, close=rounds.close), stopping))
    while rounds.count == 0:
        await asyncio.sleep(0.01)

    # WHEN the worker stops THEN the loop ends without another round, and closes
    stopping.set()
    await asyncio.wait_for(loop, 5)
    assert (rounds.count, rounds.closed) == (1, 1)


async def test_a_cancelled_loop_still_closes() -> None:
    # GIVEN a running loop
    stopping = asyncio.Event()
    rounds = Rounds(stopping, [], stop_after=1000)
    loop = asyncio.create_task(run_periodic(PeriodicTask("tended", 3600, rounds.run, close=rounds.close), stopping))
    while rounds.count == 0:
        await asyncio.sleep(0.01)

    # WHEN it is cancelled (as the worker cancels its background tasks) THEN close ran
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert rounds.closed == 1
