"""Capped exponential backoff."""

from __future__ import annotations

import pytest

from krakenplug import backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    delays = backoff.Backoff(initial=0.5, maximum=4.0, jitter=0.0)
    assert [delays.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert delays.failures == 6


def test_reset_starts_again_from_the_initial_delay() -> None:
    delays = backoff.Backoff(initial=1.0, maximum=60.0, jitter=0.0)
    for _ in range(5):
        delays.next_delay()
    delays.reset()
    assert delays.failures == 0
    assert delays.next_delay() == 1.0


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 8.0), (1.0, 6.4), (0.5, 7.2)],
                         ids=["no-shortening", "full-jitter", "half-jitter"])
def test_jitter_only_shortens_the_delay(draw: float, expected: float) -> None:
    delays = backoff.Backoff(initial=8.0, maximum=8.0, jitter=0.2, uniform=lambda: draw)
    assert delays.next_delay() == pytest.approx(expected)


def test_many_failures_never_overflow() -> None:
    delays = backoff.Backoff(initial=1.0, maximum=30.0, jitter=0.0)
    for _ in range(2000):
        delay = delays.next_delay()
    assert delay == 30.0


@pytest.mark.parametrize(("initial", "maximum", "jitter"), [(0, 1, 0), (2, 1, 0), (1, 2, 1.0)],
                         ids=["zero-initial", "cap-below-initial", "jitter-one"])
def test_bad_parameters_are_refused(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        backoff.Backoff(initial=initial, maximum=maximum, jitter=jitter)
