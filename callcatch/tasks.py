"""Reconnect pacing and task keeping shared by the AMI and ARI clients."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Coroutine
from typing import Any


class Backoff:
    """Delays that start under a second and double up to a cap, with a little jitter so
    that two clients of one restarted Asterisk do not knock in step."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2.0**self.attempt)
        self.attempt += 1
        jitter: float = random.uniform(0.8, 1.0)
        return delay * jitter


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stopping`` is set; True when stopping."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class TaskSet:
    """Holds every task a component starts, logs the ones that fail, and drains them."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self.log = logger
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any] | Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("%s task failed", self.name, exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the tasks started so far (and the ones they start) to finish."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self.tasks)
