"""The replica-ID codec: what the plugin advertises decodes back to the physical device, hashed or not."""

from __future__ import annotations

import pytest

from krakenplug import replica_ids

LONG_62 = "GPU-" + "0123456789abcdef" * 3 + "0123456789"  # 62 characters: "::k" pushes it over 63


def test_the_62_character_fixture_is_62_characters() -> None:
    assert len(LONG_62) == 62


@pytest.mark.parametrize(("device_id", "replicas"), [
    ("gpu-0", 1), ("gpu-0", 3), ("x" * 63, 1), ("x" * 64, 1), (LONG_62, 2), ("ü" * 70, 1000),
], ids=["plain", "replicas", "63-kept", "64-hashed", "62-with-replicas-hashed", "unicode-four-digit-replica"])
def test_every_advertised_id_decodes_to_its_device(device_id: str, replicas: int) -> None:
    others = [device_id + "-other", device_id[:-1], "gpu-1"]
    decoder = replica_ids.Decoder([device_id, *others])
    advertised = replica_ids.replica_ids(device_id, replicas)

    assert all(len(one) <= replica_ids.MAX_ID_LENGTH for one in advertised)
    assert [decoder.physical_id(one) for one in advertised] == [device_id] * replicas


def test_a_62_character_id_with_two_replicas_is_hashed_and_still_decodes() -> None:
    advertised = replica_ids.replica_ids(LONG_62, 2)

    assert all(one.endswith(f"::{k}") and not one.startswith(LONG_62) for k, one in enumerate(advertised))
    assert replica_ids.physical_id(advertised[1], {LONG_62, "gpu-1"}) == LONG_62


@pytest.mark.parametrize("advertised", [
    "gpu-9::1", "gpu-0::", "gpu-0::x", "gpu-0:1", "", "GPU-0123456789abcdef0123456789abcdef0123456789ab-deadbeef::0",
], ids=["unknown-device", "empty-suffix", "bad-suffix", "single-colon", "empty", "hash-of-nothing-we-know"])
def test_ids_of_devices_we_do_not_have_decode_to_none(advertised: str) -> None:
    assert replica_ids.physical_id(advertised, {"gpu-0", LONG_62}) is None


def test_a_hashed_id_of_another_replica_count_is_checked_not_guessed() -> None:
    # Same digest, but the prefix length belongs to a different suffix: not one of our IDs.
    advertised = replica_ids.fit_id(LONG_62, "::1")
    tampered = advertised[1:-3] + "::12"
    assert replica_ids.physical_id(tampered, {LONG_62}) is None
