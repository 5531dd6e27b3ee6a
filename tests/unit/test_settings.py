"""Settings come from flags > env > config file > defaults, and bad input names the field and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from krakenplug import errors, settings


@pytest.fixture(autouse=True)
def _isolated_env(clean_env: None) -> None:
    pass


def test_defaults_are_usable_without_any_source() -> None:
    loaded = settings.load()
    assert loaded.backend == "fake"
    assert loaded.plugin.device_plugin_dir == Path("/var/lib/kubelet/device-plugins")
    assert loaded.exporter.address == "0.0.0.0:9478"
    assert loaded.discovery.enabled is False


def test_precedence_is_flags_then_env_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("version: v1\nplugin:\n  replicas: 2\n  cdi_enabled: true\nlog:\n  level: debug\n")
    monkeypatch.setenv("KRAKENPLUG_PLUGIN__REPLICAS", "3")
    from_env = settings.load(config_file=config)
    assert from_env.plugin.replicas == 3  # env beats file
    assert from_env.plugin.cdi_enabled is True  # file beats default
    assert from_env.log.level == "debug"
    from_flag = settings.load(config_file=config, overrides={"plugin": {"replicas": 4}})
    assert from_flag.plugin.replicas == 4


def test_flags_left_unset_do_not_shadow_other_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKENPLUG_EXPORTER__ADDRESS", "127.0.0.1:9999")
    loaded = settings.load(overrides={"exporter": {"address": None}, "backend": None})
    assert loaded.exporter.address == "127.0.0.1:9999"


def test_node_name_comes_from_the_downward_api_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-node-7")
    assert settings.load().node_name == "gpu-node-7"


def test_backend_options_pass_through_env_with_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKENPLUG_BACKENDS__NVIDIA__LIBRARY_PATH", "/opt/nvml/libnvidia-ml.so.1")
    assert settings.load().backend_options("nvidia") == {"library_path": "/opt/nvml/libnvidia-ml.so.1"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("version: v2\n", "version"),
        ("plugin:\n  replicas: lots\n", "plugin.replicas"),
        ("plugin:\n  replicas: 0\n", "plugin.replicas"),
        ("exporter:\n  colect_timeout_seconds: 1\n", "exporter.colect_timeout_seconds"),
        ("log:\n  level: loud\n", "log.level"),
    ],
    ids=["unknown-version", "not-an-integer", "below-minimum", "misspelled-key", "bad-enum"],
)
def test_invalid_file_values_name_the_field_and_value(tmp_path: Path, content: str, expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(content)
    with pytest.raises(errors.ConfigError) as raised:
        settings.load(config_file=config)
    message = str(raised.value)
    assert expected in message
    assert str(config) in message
    assert "got " in message


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("version: v1\nplugin:\n  replicas: [1\n")
    with pytest.raises(errors.ConfigError, match=r"line \d+"):
        settings.load(config_file=config)


def test_missing_config_file_is_an_error_not_silently_ignored(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read"):
        settings.load(config_file=tmp_path / "absent.yaml")


def test_config_file_path_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("plugin:\n  replicas: 5\n")
    monkeypatch.setenv(settings.CONFIG_ENV, str(config))
    assert settings.load().plugin.replicas == 5
