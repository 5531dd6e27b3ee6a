"""Exit codes an operator sees from ``krakenplug run``/``devices`` when the input is wrong (README: 2 = invalid settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from krakenplug import cli

BINARY = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))  # what --fake-devices /usr/bin/ls would read


@pytest.fixture(autouse=True)
def _isolated_env(clean_env: None) -> None:
    pass


def _run_agent(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KRAKENPLUG_")}
    return subprocess.run([sys.executable, "-m", "krakenplug", "run", *argv], capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def test_a_malformed_web_config_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    web = tmp_path / "web-config.yml"
    web.write_text("basic_auth_users: [not, a, mapping]\n")
    result = _run_agent("--no-plugin", "--metrics-address", "127.0.0.1:0", "--web-config-file", str(web))
    assert result.returncode == cli.EXIT_CONFIG, result.stderr
    assert f"exporter.web_config_file {web}" in result.stderr and "basic_auth_users" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_binary_fake_devices_file_on_the_command_line_exits_2_naming_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "ls"
    binary.write_bytes(BINARY)
    result = _run_agent("--fake-devices", str(binary), "--no-exporter", "--device-plugin-dir", str(tmp_path))
    assert result.returncode == cli.EXIT_CONFIG, result.stderr
    assert f"krakenplug: fake devices file {binary}: not UTF-8 text (byte 136" in result.stderr
    assert "serving zero devices" not in result.stderr and "Traceback" not in result.stderr


def test_devices_refuses_a_binary_fake_devices_file_with_exit_2(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "devices.yaml"
    binary.write_bytes(b"devices: \xff\xfe")
    assert cli.main(["devices", "--fake-devices", str(binary)]) == cli.EXIT_CONFIG
    assert f"fake devices file {binary}: not UTF-8 text (byte 9: b'\\xff')" in capsys.readouterr().err
