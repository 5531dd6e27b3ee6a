"""The fake backend at start: its library info, and a binary devices file named at start vs. edited later."""

from __future__ import annotations

from pathlib import Path

import pytest

from krakenplug import errors
from krakenplug.backends import base, fake

ONE_DEVICE = "devices: [{id: dev-a, model: Sim-40G, memory_mb: 40960}]\n"


def test_library_info_names_the_devices_file_or_the_embedded_default(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(ONE_DEVICE)
    backend = fake.FakeBackend(fake.FakeOptions(devices_file=path))
    assert isinstance(backend, base.SupportsLibraryInfo)
    assert backend.library_info() == base.LibraryInfo(library="fake devices file", api="krakenplug fake v1",
                                                      path=str(path))
    assert fake.FakeBackend(fake.FakeOptions()).library_info().path == "embedded"


def test_a_binary_file_at_the_first_open_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_bytes(b"devices: []\n\0\0\0")
    with pytest.raises(errors.ConfigError, match=f"fake devices file {path}: not a text file"):
        fake.FakeBackend(fake.FakeOptions(devices_file=path)).open()


def test_a_file_that_turns_up_binary_while_retrying_keeps_the_backend_waiting(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    backend = fake.FakeBackend(fake.FakeOptions(devices_file=path))
    with pytest.raises(errors.BackendUnavailable, match="cannot read"):
        backend.open()  # not there yet: the agent serves zero devices and retries
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(errors.BackendUnavailable, match="not UTF-8 text"):
        backend.open()  # a retry: still unavailable, never a settings error that would end the agent
    path.write_text(ONE_DEVICE)
    backend.open()
    assert [d.id for d in backend.devices()] == ["dev-a"]


def test_a_later_binary_edit_keeps_the_last_good_devices(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(ONE_DEVICE)
    backend = fake.FakeBackend(fake.FakeOptions(devices_file=path))
    backend.open()
    path.write_bytes(b"devices: []\n\0")
    assert [d.id for d in backend.devices()] == ["dev-a"]
    assert backend.last_error is not None and "not a text file (NUL at byte 12)" in backend.last_error
