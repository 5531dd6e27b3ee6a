"""What a new user sees: --help for people, defaults in `run --help`, `devices` failing with the reason."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from krakenplug import backends, cli, demo, settings


@pytest.fixture(autouse=True)
def _isolated_env(clean_env: None) -> None:
    pass


def _help(*argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps by terminal width


def test_top_level_help_speaks_to_users_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys=capsys)
    assert "parse settings once" not in text and "``" not in text  # the module docstring is for developers
    assert "device plugin" in text and "Prometheus exporter" in text
    for example in ["krakenplug demo", "krakenplug devices --backend nvidia", "krakenplug run --config FILE"]:
        assert example in text
    assert "default backend (fake)" in text


def test_run_help_shows_every_default_from_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("run", capsys=capsys)
    defaults = settings.load(overrides={})
    assert f"(default: {defaults.backend})" in text and defaults.backend == "fake"
    assert f"kubelet device-plugin directory (default: {defaults.plugin.device_plugin_dir})" in text
    assert f"(default: {defaults.exporter.pod_resources_socket})" in text
    assert f"exporter listen address (default: {defaults.exporter.address})" in text
    assert f"time-slicing replicas per device (default: {defaults.plugin.replicas})" in text
    assert f"log level, to stderr (default: {defaults.log.level})" in text
    assert "enable or disable the discovery component (default: off)" in text
    assert "enable or disable the plugin component (default: on)" in text


def test_devices_exits_3_with_the_reason_when_the_fake_file_is_broken(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "devices.yaml"
    typo.write_text("device:\n  - {id: a, model: M, memory_mb: 1}\n")
    assert cli.main(["devices", "--fake-devices", str(typo)]) == cli.EXIT_BACKEND
    captured = capsys.readouterr()
    assert "no devices found" not in captured.out
    assert f"backend fake is unavailable: fake devices file {typo}" in captured.err
    assert "device: unknown key" in captured.err  # the typo, not "devices: Field required"
    assert "DaemonSet" not in captured.err and "driver" not in captured.err
    assert cli.main(["devices", "--fake-devices", str(tmp_path / "absent.yaml")]) == cli.EXIT_BACKEND
    assert "absent.yaml" in capsys.readouterr().err


def test_devices_exits_3_when_the_vendor_library_is_missing(tmp_path: Path) -> None:
    library = tmp_path / "libnvidia-ml.so.1"
    result = subprocess.run([sys.executable, "-m", "krakenplug", "devices", "--backend", "nvidia",
                             "--backend-opt", f"library_path={library}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == cli.EXIT_BACKEND
    assert "backend nvidia is unavailable" in result.stderr and str(library) in result.stderr
    assert "nodeSelector" not in result.stderr  # the agent's advice stays with the agent


def test_the_agent_keeps_its_advice_and_fits_it_to_the_backend(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    typo = tmp_path / "devices.yaml"
    typo.write_text("device: []\n")
    config = settings.load(overrides={"backends": {"fake": {"devices_file": str(typo)}}})
    with caplog.at_level(logging.WARNING, logger="krakenplug.backends"):
        backend = backends.open_backend(config)
    backend.close()
    text = caplog.text
    assert "device: unknown key" in text and "serving zero devices" in text
    assert "driver" not in text and "DaemonSet" not in text and "a fake node" not in text


def test_agent_advice_for_a_vendor_backend_reads_naturally(tmp_path: Path) -> None:
    script = ("import logging, sys; logging.basicConfig(level=logging.WARNING, stream=sys.stdout)\n"
              "from krakenplug import backends, settings\n"
              f"c = settings.load(overrides={{'backend': 'nvidia', 'backends': {{'nvidia': "
              f"{{'library_path': '{tmp_path}/libnvidia-ml.so.1'}}}}}})\n"
              "backends.open_backend(c).close()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "if this node should not run the nvidia backend, fix the DaemonSet's nodeSelector" in result.stdout
    assert "a nvidia node" not in result.stdout


def test_demo_keep_running_says_where_malformed_edits_are_logged(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    monkeypatch.setattr(demo.signal, "signal", lambda *_: None)  # leave pytest's own handlers alone

    def interrupted() -> None:
        raise KeyboardInterrupt

    session = SimpleNamespace(exporter=True, port=1, devices_file=tmp_path / "devices.yaml",
                              log_path=tmp_path / "agent.log", check_agent=interrupted)
    demo._serve_until_interrupted(session)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert f"a malformed edit is logged with its line and field to {tmp_path / 'agent.log'}" in out
