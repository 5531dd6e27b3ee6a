"""Log a condition when it starts, changes or ends, not on every check (one helper for the whole agent).

A loop that retries something every few seconds would otherwise repeat the same warning forever; with
:class:`TransitionLog` the first failure is logged, a different failure is logged again, the same one
is not, and :meth:`TransitionLog.clear` logs the recovery once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

__all__ = ["TransitionLog"]


class TransitionLog:
    """Remembers the last reported state per key; thread-safe."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._states: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def report(self, key: Hashable, state: str, level: int, message: str, *args: object) -> bool:
        """Logs ``message % args`` at ``level`` if ``state`` differs from the last one for ``key``.

        Returns True when it logged (the condition is new or changed).
        """
        with self._lock:
            if self._states.get(key) == state:
                return False
            self._states[key] = state
        self._logger.log(level, message, *args)
        return True

    def clear(self, key: Hashable, level: int = logging.INFO, message: str = "", *args: object) -> bool:
        """Forgets ``key``; logs ``message`` (if given) only when a condition was reported for it."""
        with self._lock:
            had = self._states.pop(key, None) is not None
        if had and message:
            self._logger.log(level, message, *args)
        return had

    def active(self, key: Hashable) -> str | None:
        with self._lock:
            return self._states.get(key)
