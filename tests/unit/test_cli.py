"""The command line: flags map onto settings, errors exit non-zero with the field named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from krakenplug import cli


@pytest.fixture(autouse=True)
def _isolated_env(clean_env: None) -> None:
    pass


def test_devices_prints_a_table_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["devices", "--backend", "fake"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "backend fake: library fake devices file, API krakenplug fake v1, path embedded"
    assert lines[1].split() == ["INDEX", "ID", "MODEL", "MEMORY(MB)", "NUMA", "HEALTH", "PCI", "RESOURCE"]
    assert lines[2].split()[:6] == ["0", "fake-0", "KrakenSim-80G", "81920", "0", "Healthy"]
    assert len(lines) == 6


def test_devices_json_has_the_documented_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices: [{id: only, model: M1, memory_mb: 512, numa_node: 3, health: Unhealthy}]\n")
    assert cli.main(["devices", "--fake-devices", str(devices), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert {k: row[k] for k in ("id", "index", "vendor", "model", "memory_total_mb", "numa_node", "health")} == {
        "id": "only", "index": 0, "vendor": "fake", "model": "M1", "memory_total_mb": 512, "numa_node": 3,
        "health": "Unhealthy"}


def test_backend_opt_reaches_the_selected_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices: [{id: x, model: M1, memory_mb: 1}]\n")
    assert cli.main(["devices", "--json", "--backend-opt", f"devices_file={devices}",
                     "--backend-opt", "resource_name=example.com/sim"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["resource"] == "example.com/sim"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["devices", "--backend", "quantum"], "unknown backend 'quantum'"),
        (["devices", "--backend-opt", "novalue"], "expected KEY=VALUE, got 'novalue'"),
        (["devices", "--backend-opt", "watch_interval_seconds=-1"], "backends.fake.watch_interval_seconds"),
        (["run", "--replicas", "0"], "plugin.replicas"),
        (["run", "--no-plugin", "--no-exporter", "--no-discovery"], "nothing to run"),
    ],
    ids=["unknown-backend", "malformed-backend-opt", "invalid-backend-opt", "invalid-replicas", "nothing-enabled"],
)
def test_bad_input_exits_2_naming_the_field(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == cli.EXIT_CONFIG
    assert expected in capsys.readouterr().err


def test_config_file_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("plugin:\n  replicas: many\n")
    assert cli.main(["devices", "--config", str(config)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert str(config) in err and "plugin.replicas" in err and "'many'" in err


def test_fail_on_init_error_exits_3_when_the_backend_cannot_open(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "krakenplug", "run", "--fake-devices", str(tmp_path / "absent.yaml"),
         "--fail-on-init-error", "--no-exporter", "--device-plugin-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == cli.EXIT_BACKEND
    assert "absent.yaml" in result.stderr


def test_version_is_the_installed_distributions_and_costs_no_metadata_lookup(
        capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"krakenplug {metadata.version('krakenplug')}"
    # importlib.metadata costs ~30 ms at start-up; the version is a constant in krakenplug/_version.py.
    probe = "import sys, krakenplug; print('importlib.metadata' in sys.modules, krakenplug.__version__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", metadata.version("krakenplug")]
