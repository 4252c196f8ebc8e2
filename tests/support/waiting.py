"""Waiting for a condition instead of sleeping for a guess: the suite's one polling helper.

``wait_until`` calls ``condition`` every ``interval`` seconds until it returns something truthy, and returns
that value; after ``timeout`` seconds it fails the test with ``message`` (and the last value or error seen).
Exceptions listed in ``ignoring`` count as "not yet" (a server still starting refuses connections). The
condition is always tried once more after the deadline, so a slow machine that is merely late still passes
when the state did arrive. ``wait_until_async`` is the same for a test's event loop; its condition may be
a plain function or a coroutine function. ``sleep`` replaces time.sleep where something must keep running
between tries (Playwright's sync API delivers browser events only while it is called).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

Message = str | Callable[[], str]


class _Waiter:
    """The deadline and the last thing seen, shared by the sync and async loops."""

    def __init__(self, timeout: float, message: Message, ignoring: tuple[type[BaseException], ...]) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.message = message
        self.ignoring = ignoring
        self.last: object = None

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self) -> AssertionError:
        text = self.message() if callable(self.message) else self.message
        seen = f"last error: {self.last!r}" if isinstance(self.last, BaseException) else f"last value: {self.last!r}"
        return AssertionError(f"{text or 'condition not met'} (waited {self.timeout:g}s; {seen})")


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: Message = "",
    ignoring: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Poll ``condition`` until it is truthy and return its value; fail the test after ``timeout`` seconds."""
    waiter = _Waiter(timeout, message, ignoring)
    while True:
        expired = waiter.expired()
        try:
            value = condition()
        except ignoring as exc:
            waiter.last = exc
        else:
            if value:
                return value
            waiter.last = value
        if expired:
            raise waiter.failure()
        sleep(interval)


async def wait_until_async(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: Message = "",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``wait_until`` on the running event loop; ``condition`` may return an awaitable."""
    waiter = _Waiter(timeout, message, ignoring)
    while True:
        expired = waiter.expired()
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:
            waiter.last = exc
        else:
            if value:
                return value  # type: ignore[return-value]
            waiter.last = value
        if expired:
            raise waiter.failure()
        await asyncio.sleep(interval)
