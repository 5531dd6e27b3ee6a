"""Capped exponential backoff with jitter, so a cluster's worth of nodes does not retry in lockstep."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays of ``initial * 2**n`` seconds, at most ``maximum``, each shortened by up to ``jitter``."""

    def __init__(self, *, initial: float, maximum: float, jitter: float = 0.2,
                 uniform: Callable[[], float] = random.random) -> None:
        if initial <= 0 or maximum < initial or not 0 <= jitter < 1:
            raise ValueError(f"backoff: need 0 < initial <= maximum and 0 <= jitter < 1 "
                             f"(got initial={initial}, maximum={maximum}, jitter={jitter})")
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter
        self._uniform = uniform
        self.failures = 0

    def next_delay(self) -> float:
        """Counts one more failure and returns how long to wait before the next try."""
        ceiling = min(self._maximum, self._initial * 2.0 ** min(self.failures, 62))
        self.failures += 1
        return ceiling * (1 - self._jitter * self._uniform())

    def reset(self) -> None:
        self.failures = 0
