"""Every command the README prints is run here (or, for the two CI runs itself, checked where CI runs it).

The README's ``sh`` blocks are read line by line and must match the table ``COMMANDS`` exactly, so a new or
changed command fails until it has a check. What cannot run on a machine without a cluster or a registry
runs as close to verbatim as helm allows, and the test says what it changed:
``helm install`` gets ``--dry-run=client``; ``helm upgrade`` becomes ``helm template`` with the same flags;
``helm repo add`` is pointed at a local copy of the GitHub Pages site that ``ci/release-chart.sh`` builds
(after checking that the same script publishes at the README's URL); a push to a registry goes to a local
OCI layout; ``kubectl`` columns are checked against the resources the rendered agent config advertises.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from shiplib import REPO_ROOT, require

from krakenplug import backends, cli, settings

README = (REPO_ROOT / "README.md").read_text()
PAGES_URL = "https://c2net-ai.github.io/krakenplug"


def readme_commands() -> list[str]:
    """The README's ``sh`` blocks as commands: continuation lines joined, trailing comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", README, re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


class Site:
    """A local stand-in for the GitHub Pages site of the chart repository, served over HTTP."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory = directory
        self.url = url


@pytest.fixture
def pages(tmp_path_factory: pytest.TempPathFactory, helm_env: dict[str, str], free_port: int) -> Iterator[Site]:
    """The chart site as release-chart.sh builds it, served by Python's own static file server process."""
    directory = tmp_path_factory.mktemp("gh-pages")
    url = f"http://127.0.0.1:{free_port}"
    _run(["bash", "ci/release-chart.sh", "--pages", str(directory)], helm_env, PAGES_URL=url)
    with subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                           str(directory), str(free_port)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as server:
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", free_port), timeout=1):
                    break
                time.sleep(0.05)
            yield Site(directory, url)
        finally:
            server.terminate()


def _run(argv: list[str], env: dict[str, str], timeout: float = 300, **extra: str) -> str:
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, env={**env, **extra},
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{shlex.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _agent_configs(rendered: str) -> dict[str, settings.Settings]:
    """Backend name -> the agent settings each vendor ConfigMap holds, loaded by the real loader."""
    configs: dict[str, settings.Settings] = {}
    for obj in _objects(rendered):
        if obj["kind"] == "ConfigMap" and "config.yaml" in (obj.get("data") or {}):
            tree = yaml.safe_load(obj["data"]["config.yaml"])
            configs[tree["backend"]] = settings.load(overrides=tree)
    return configs


def _images(rendered: str) -> set[str]:
    return {container["image"] for obj in _objects(rendered) if obj["kind"] == "DaemonSet"
            for container in obj["spec"]["template"]["spec"]["containers"]}


# --- the checks, one per README command ------------------------------------------------------------------

def check_quickstart(command: str, ctx: Context) -> None:
    """The first command of the README, verbatim, in a fresh copy of the package sources."""
    checkout = ctx.tmp / "checkout"
    shutil.copytree(REPO_ROOT, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".tools", ".ci", "build", "dist", "__pycache__", "*.egg-info", "node_modules", "tests",
        "bench", "charts", "docs"))
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(REPO_ROOT)))
    result = subprocess.run(["bash", "-c", command], cwd=checkout, capture_output=True, text=True, env=env,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Fault injection" in result.stdout and "Done: agent stopped cleanly" in result.stdout


def check_ci_run(command: str, ctx: Context) -> None:
    """`bash .ci/run` is what CI runs (this suite runs inside it): the test workflow's last step, verbatim."""
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "test.yaml").read_text())
    assert workflow["jobs"]["test"]["steps"][-1]["run"].splitlines()[-1] == command


def check_build_image(command: str, ctx: Context) -> None:
    """`.ci/run` runs the image build verbatim before this suite, as root, with the smoke test and size check."""
    assert command in (REPO_ROOT / ".ci" / "run").read_text().splitlines()


def check_push_image(command: str, ctx: Context) -> None:
    """The push, with the archive .ci/run built (else a tiny stand-in) and a local OCI layout as the registry."""
    from test_workflows import _tiny_oci_archive

    argv = shlex.split(command)
    archive = REPO_ROOT / argv[2]
    assert argv[2] == ".ci/out/image/krakenplug-0.1.0.oci.tar" and argv[3].startswith("docker://")
    if not archive.is_file():
        archive = ctx.tmp / "stand-in.oci.tar"
        _tiny_oci_archive(archive)
    require("skopeo (ci/build-image.sh installs it)", shutil.which("skopeo"))
    layout = ctx.tmp / "registry"
    _run(["bash", argv[1], str(archive), f"oci:{layout}:0.1.0"], ctx.env)
    assert "0.1.0" in (layout / "index.json").read_text()


def check_repo_add(command: str, ctx: Context) -> None:
    argv = shlex.split(command)
    assert argv[-1] == PAGES_URL
    published = ctx.tmp / "published"
    published.mkdir()
    _run(["bash", "ci/release-chart.sh", "--pages", str(published)], ctx.env, GITHUB_REPOSITORY="c2net-ai/krakenplug")
    urls = yaml.safe_load((published / "index.yaml").read_text())["entries"]["krakenplug"][0]["urls"]
    assert all(url.startswith(PAGES_URL + "/") for url in urls), urls
    _run([*argv[:-1], ctx.pages.url], ctx.env)  # the same command against the local copy of the site


def check_repo_update(command: str, ctx: Context) -> None:
    _run(shlex.split(command), ctx.env)
    listed = _run(["helm", "search", "repo", "krakenplug/krakenplug", "-o", "yaml"], ctx.env)
    assert [item["name"] for item in yaml.safe_load(listed)] == ["krakenplug/krakenplug"]


def _dry_run_install(command: str, ctx: Context) -> str:
    """`helm install ... --dry-run=client`: the manifest of the release helm would create."""
    release = json.loads(_run([*shlex.split(command), "--dry-run=client", "-o", "json"], ctx.env))
    assert release["name"] == "krakenplug" and release["namespace"] == "krakenplug"
    manifest: str = release["manifest"]
    return manifest


def check_repo_install_with_vendor_toggles(command: str, ctx: Context) -> None:
    rendered = _dry_run_install(command, ctx)
    backends_deployed = set(_agent_configs(rendered))
    assert backends_deployed and not backends_deployed & {"ascend", "cambricon"}


def _as_template(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[:2] == ["helm", "upgrade"]
    return ["helm", "template", *[arg for arg in argv[2:] if arg not in ("--install", "--create-namespace")]]


def check_upgrade_nvidia_replicas(command: str, ctx: Context) -> None:
    configs = _agent_configs(_run(_as_template(command), ctx.env))
    assert set(configs) == {"nvidia"}
    assert configs["nvidia"].plugin.replicas == 2


def check_kubectl_columns(command: str, ctx: Context) -> None:
    """Each column names a resource the agent advertises under values/nvidia-only.yaml (the upgrade above)."""
    upgrade = next(c for c in readme_commands() if c.startswith("helm upgrade") and "nvidia-only" in c)
    config = _agent_configs(_run(_as_template(upgrade), ctx.env))["nvidia"]
    options = config.selected_options()
    # Rules first, the rest under resource_name or NVIDIA's default (the README's vendor table).
    advertised = {rule.name for rule in options.resources} | {options.resource_name or "krakenplug.pcl.ac.cn/nvidia"}
    columns = re.search(r"custom-columns='([^']+)'", command)
    assert columns is not None
    paths = dict(column.split(":", 1) for column in columns.group(1).split(","))
    assert paths.pop("NODE") == ".metadata.name"
    assert paths, "no resource column"
    for header, path in paths.items():
        assert path.startswith(".status.allocatable."), header
        resource = path.removeprefix(".status.allocatable.").replace("\\.", ".")
        assert resource in advertised, f"column {header}: {resource} is not advertised ({sorted(advertised)})"


def check_own_image(command: str, ctx: Context) -> None:
    assert _images(_run(_as_template(command), ctx.env)) == {"registry.example.com/ml/krakenplug:0.1.0"}


def check_get_helm(command: str, ctx: Context) -> None:
    """Verbatim, with a fresh virtualenv active: plain `helm` works afterwards."""
    venv_dir = ctx.tmp / "venv"
    (venv_dir / "bin").mkdir(parents=True)
    _run(shlex.split(command), ctx.env, VIRTUAL_ENV=str(venv_dir))
    path = f"{venv_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    assert shutil.which("helm", path=path) == str(venv_dir / "bin" / "helm")
    ctx.env = {**ctx.env, "PATH": path}
    assert "v4." in _run(["helm", "version", "--short"], ctx.env)


def check_checkout_install(command: str, ctx: Context) -> None:
    rendered = _dry_run_install(command, ctx)
    assert set(_agent_configs(rendered)) == {"fake"}


class Context:
    def __init__(self, tmp: Path, env: dict[str, str], pages: Site) -> None:
        self.tmp = tmp
        self.env = env
        self.pages = pages


COMMANDS: dict[str, Callable[[str, Context], None]] = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && krakenplug demo": check_quickstart,
    "bash .ci/run": check_ci_run,
    "helm repo add krakenplug https://c2net-ai.github.io/krakenplug": check_repo_add,
    "helm repo update": check_repo_update,
    "helm install krakenplug krakenplug/krakenplug -n krakenplug --create-namespace "
    "--set vendors.ascend.enabled=false --set vendors.cambricon.enabled=false": check_repo_install_with_vendor_toggles,
    "helm upgrade krakenplug krakenplug/krakenplug -n krakenplug -f values/nvidia-only.yaml "
    "--set vendors.nvidia.plugin.replicas=2": check_upgrade_nvidia_replicas,
    "kubectl get nodes -o custom-columns='NODE:.metadata.name,GPUS:.status.allocatable.krakenplug\\.pcl\\.ac\\.cn/nvidia,"
    "A100:.status.allocatable.krakenplug\\.pcl\\.ac\\.cn/nvidia-a100'": check_kubectl_columns,
    "bash ci/build-image.sh": check_build_image,
    "bash ci/push-image.sh .ci/out/image/krakenplug-0.1.0.oci.tar "
    "docker://registry.example.com/ml/krakenplug:0.1.0": check_push_image,
    "helm upgrade --install krakenplug krakenplug/krakenplug -n krakenplug --create-namespace "
    "--set image.repository=registry.example.com/ml/krakenplug --set image.tag=0.1.0": check_own_image,
    "bash ci/get-helm.sh": check_get_helm,
    "helm install krakenplug charts/krakenplug -n krakenplug --create-namespace -f values/fake-kind.yaml":
        check_checkout_install,
}
SLOW = {check_quickstart}


def test_every_readme_command_has_a_check() -> None:
    assert readme_commands() == list(COMMANDS)


def test_readme_commands_in_order(helm_env: dict[str, str], pages: Site, tmp_path: Path) -> None:
    """In the README's order, sharing helm's state as a user's shell would (repo add before install)."""
    ctx = Context(tmp_path, dict(helm_env), pages)
    for command, check in COMMANDS.items():
        if check in SLOW:
            continue
        check(command, ctx)


@pytest.mark.slow
def test_readme_quickstart_verbatim(tmp_path: Path) -> None:
    check_quickstart(next(iter(COMMANDS)), Context(tmp_path, dict(os.environ), Site(tmp_path, "")))


def test_command_line_synopsis_lists_only_flags_the_cli_accepts() -> None:
    block = re.search(r"## Command line\n\n```\n(.*?)```", README, re.DOTALL)
    assert block is not None
    parser = cli.build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    command = None
    for line in block.group(1).splitlines():
        words = line.split()
        if words[:1] == ["krakenplug"]:
            command = words[1]
        if command not in subcommands:
            continue
        accepted = {option for action in subcommands[command]._actions for option in action.option_strings}
        for flag in re.findall(r"--(?:\[no-\])?[a-z][a-z-]*", line):
            names = [flag.replace("[no-]", ""), flag.replace("[no-]", "no-")] if "[no-]" in flag else [flag]
            for name in names:
                assert name in accepted, f"README synopsis: krakenplug {command} has no {name}"


def test_readme_settings_block_shows_the_real_defaults() -> None:
    block = re.search(r"## Settings\n.*?```yaml\n(.*?)```", README, re.DOTALL)
    assert block is not None
    shown = yaml.safe_load(block.group(1))
    defaults = settings.load(overrides={})
    assert shown["backend"] == defaults.backend == "fake"
    assert shown["log"] == {"level": defaults.log.level, "format": defaults.log.format}
    assert shown["plugin"]["replicas"] == defaults.plugin.replicas
    assert shown["exporter"]["address"] == defaults.exporter.address
    real = defaults.model_dump(mode="json")
    for section in ("plugin", "exporter", "discovery", "dra"):  # every field, with its real default
        assert shown[section] == real[section], f"README Settings block, section {section}"
    assert shown["cdi_dir"] == real["cdi_dir"]
    options = backends.options_class("nvidia")().model_dump(mode="json")
    example_defaults = {key: value for key, value in shown["backends"]["nvidia"].items() if key != "resources"}
    assert example_defaults == {key: options[key] for key in example_defaults}


def _apt_packages() -> set[str]:
    """What `.ci/run` and `ci/build-image.sh` may install with apt-get."""
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    packages = {word for group in re.findall(r"need\+=\(([^)]*)\)", ci_run) for word in group.split()}
    build = (REPO_ROOT / "ci" / "build-image.sh").read_text()
    tools = re.search(r"for tool in ([^;]+); do", build)
    assert tools is not None
    packages |= {pair.split(":")[1] for pair in tools.group(1).split()}
    return packages


def test_readme_says_next_to_ci_run_that_it_installs_debian_packages_as_root() -> None:
    first_block_end = README.index("```", README.index("```sh") + 5)
    note = README[first_block_end:README.index("KrakenPlug gives")]
    assert "**as root**" in note and "apt-get" in note
    assert "prometheus.service" in note and "systemctl disable --now prometheus" in note
    missing = sorted(package for package in _apt_packages() if package not in note)
    assert not missing, f"README does not name {missing} next to `bash .ci/run`"
