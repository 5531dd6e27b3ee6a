"""Waiting for a condition that nothing signals (another process, a file, a stand-in's state)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(predicate: Callable[[], T], *, timeout: float, interval: float, what: str) -> T:
    """Calls ``predicate`` every ``interval`` seconds until it returns something truthy and returns that;
    raises TimeoutError naming ``what`` after ``timeout`` seconds. An exception from ``predicate`` ends the
    wait (a caller checks there that what it waits on is still alive)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)
