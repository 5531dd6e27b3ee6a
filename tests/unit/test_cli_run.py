"""``krakenplug run`` wiring: the device hub's poll interval."""

from __future__ import annotations

import pytest

from krakenplug import cli, settings


@pytest.mark.parametrize(("rescan", "health", "expected"), [(5.0, None, 5.0), (5.0, 2.0, 2.0), (1.0, 30.0, 1.0)],
                         ids=["default-health-poll-is-slower", "health-poll-asks-for-more", "rescan-asks-for-more"])
def test_the_hub_polls_at_the_shorter_of_rescan_and_health_poll(clean_env: None, rescan: float,
                                                                 health: float | None, expected: float) -> None:
    fake = {} if health is None else {"health_poll_interval_seconds": health}
    config = settings.load(overrides={"backend": "fake", "plugin": {"rescan_interval_seconds": rescan},
                                      "backends": {"fake": fake}})
    assert cli.hub_poll_seconds(config) == expected
