"""Settings come from flags > env > config file > defaults, and bad input names the field and value."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_backend_options_are_validated_by_the_backends_own_model() -> None:
    loaded = settings.load(overrides={"backend": "nvidia", "backends": {"nvidia": {"ignored_xids": "13,31"}}})
    options = loaded.selected_options()
    assert type(options).__name__ == "NvidiaOptions"
    assert options.ignored_xids == [13, 31]  # type: ignore[attr-defined]
    assert loaded.backend_options("nvidia") == {"ignored_xids": [13, 31]}
    with pytest.raises(errors.ConfigError, match=r"backends\.nvidia\.ignored_xid \(command line\): Extra inputs"):
        settings.load(overrides={"backends": {"nvidia": {"ignored_xid": [1]}}})
    with pytest.raises(errors.ConfigError,
                       match=r"backends\.amd \(command line\): unknown backend .amd.; known backends"):
        settings.load(overrides={"backends": {"amd": {"x": 1}}})


def test_only_backends_named_in_the_settings_are_imported() -> None:
    code = ("import sys; from krakenplug import settings; settings.load(); "
            "print(sorted(m for m in sys.modules if m.startswith('krakenplug.backends.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=_clean_environ(), check=True)
    imported = result.stdout.strip()
    for vendor in ("nvidia", "ascend", "cambricon", "kunlun", "streamcomputing"):
        assert f"krakenplug.backends.{vendor}" not in imported


def test_one_backend_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKENPLUG_BACKENDS__NVIDIA", '{"library_path": "/opt/libnvidia-ml.so.1"}')
    assert settings.load().backend_options("nvidia") == {"library_path": "/opt/libnvidia-ml.so.1"}
    monkeypatch.setenv("KRAKENPLUG_BACKENDS__NVIDIA", "library_path=/opt")
    with pytest.raises(errors.ConfigError, match="environment KRAKENPLUG_BACKENDS__NVIDIA: backends.nvidia must be"):
        settings.load()


def test_env_sources_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKENPLUG_PLUGIN__REPLICAS", "0")
    with pytest.raises(errors.ConfigError, match=r"plugin\.replicas \(environment KRAKENPLUG_PLUGIN__REPLICAS\)"):
        settings.load()


# --- hostile input through the real CLI: exit 2, one message naming source and field, value cut ----------------

def _clean_environ(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KRAKENPLUG_") and key != "NODE_NAME"}
    return {**env, **extra}


def _run_agent(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "krakenplug", "run", "--no-plugin", "--no-exporter", *args],
                          capture_output=True, text=True, timeout=timeout, env=env or _clean_environ(), check=False)


def _assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    assert len(output) < 2000, f"{len(output)} characters of output"
    for text in expected:
        assert text in output, output


def _config(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


HOSTILE_FILES = [
    ("deeply-nested", "plugin: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested deeper than"),
    ("non-utf8", b"version: v1\nlog:\n  level: \xff\xfe\n", "line 3: not UTF-8 text (byte 26"),
    ("alias-bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                   "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n",
     "line 2 column 8: invalid YAML: aliases (*name) are not allowed"),
    ("duplicate-key", "version: v1\nplugin:\n  replicas: 2\n  replicas: 3\n", "line 4 column 3: invalid YAML: "
                                                                             "duplicate key 'replicas'"),
    ("ten-megabytes", "log:\n  level: " + "x" * 10_000_000 + "\n", "larger than 1048576 bytes"),
    ("huge-value-echoed-cut", "log:\n  level: " + "x" * 900_000 + "\n", "log.level (config file "),
]


@pytest.mark.parametrize(("content", "message"), [case[1:] for case in HOSTILE_FILES],
                         ids=[case[0] for case in HOSTILE_FILES])
def test_hostile_config_files_exit_2_naming_the_file(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = _config(tmp_path, content)
    _assert_refused(_run_agent("--config", str(path)), f"config file {path}", message)


def test_config_from_dev_zero_is_refused_without_reading_it() -> None:
    _assert_refused(_run_agent(env=_clean_environ(KRAKENPLUG_CONFIG="/dev/zero")),
                    "config file /dev/zero: not a regular file")


HOSTILE_ENV = [
    ("section-not-json", {"KRAKENPLUG_PLUGIN": "{not json"}, "environment KRAKENPLUG_PLUGIN: plugin must be a JSON"),
    ("backends-garbage", {"KRAKENPLUG_BACKENDS": "garbage"},
     "environment KRAKENPLUG_BACKENDS: backends must be a JSON object"),
    ("misspelt-variable", {"KRAKENPLUG_PLUGN__REPLICAS": "2"},
     "environment KRAKENPLUG_PLUGN__REPLICAS: unknown setting; did you mean KRAKENPLUG_PLUGIN__REPLICAS?"),
    ("unknown-variable", {"KRAKENPLUG_COLOUR": "blue"}, "environment KRAKENPLUG_COLOUR: unknown setting"),
    ("huge-value", {"KRAKENPLUG_LOG__LEVEL": "x" * 100_000}, "environment KRAKENPLUG_LOG__LEVEL: value of 100000"),
    ("bad-value", {"KRAKENPLUG_PLUGIN__REPLICAS": "lots"},
     "plugin.replicas (environment KRAKENPLUG_PLUGIN__REPLICAS): Input should be a valid integer"),
]


@pytest.mark.parametrize(("variables", "message"), [case[1:] for case in HOSTILE_ENV],
                         ids=[case[0] for case in HOSTILE_ENV])
def test_hostile_environment_exits_2_naming_the_variable(variables: dict[str, str], message: str) -> None:
    _assert_refused(_run_agent(env=_clean_environ(**variables)), message)


def test_kubernetes_service_link_variables_are_not_mistaken_for_settings() -> None:
    env = _clean_environ(KRAKENPLUG_METRICS_SERVICE_HOST="10.0.0.1", KRAKENPLUG_METRICS_PORT="tcp://10.0.0.1:9478",
                         KRAKENPLUG_METRICS_PORT_9478_TCP_ADDR="10.0.0.1")
    settings.check_environment(env)  # raises on an unknown KRAKENPLUG_* name
