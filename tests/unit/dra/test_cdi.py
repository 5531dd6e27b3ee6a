"""The shared CDI writer: spec content, atomic replacement, the device plugin's per-device specs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from krakenplug import cdi
from krakenplug.backends import base, fake

from .conftest import Devices, device_specs


def _backend(path: Path) -> fake.FakeBackend:
    backend = fake.FakeBackend(fake.FakeOptions(devices_file=path))
    backend.open()
    return backend


def test_container_edits_carry_env_nodes_and_mounts() -> None:
    allocation = base.ContainerAllocation(envs={"B": "2", "A": "1"},
                                          device_nodes=(base.DeviceNode("/dev/x0", "/dev/y0", "rw"),),
                                          mounts=(base.Mount("/usr/local/hpe", "/usr/local/hpe"),
                                                  base.Mount("/data", "/in", read_only=False)))
    assert cdi.container_edits(allocation) == {
        "env": ["A=1", "B=2"],
        "deviceNodes": [{"path": "/dev/y0", "hostPath": "/dev/x0", "permissions": "rw"}],
        "mounts": [{"hostPath": "/usr/local/hpe", "containerPath": "/usr/local/hpe",
                    "options": ["ro", "nosuid", "nodev", "bind"]},
                   {"hostPath": "/data", "containerPath": "/in", "options": ["rw", "nosuid", "nodev", "bind"]}]}
    assert "env" not in cdi.container_edits(allocation, env=False)


def test_device_names_follow_the_cdi_rules() -> None:
    assert cdi.device_name("GPU-1a2b") == "GPU-1a2b"
    assert cdi.device_name("0000:3b:00.0") == "0000:3b:00.0"
    assert cdi.device_name("../evil/name") == "evil-name"
    assert cdi.qualified("k.example.com/claim", "x") == "k.example.com/claim=x"


def test_write_json_replaces_atomically_and_leaves_no_temporaries(tmp_path: Path) -> None:
    cdi.write_json(tmp_path, "a.json", {"v": 1})
    inode = os.stat(tmp_path / "a.json").st_ino
    cdi.write_json(tmp_path, "a.json", {"v": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 2}
    assert os.stat(tmp_path / "a.json").st_ino != inode  # renamed into place, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert oct((tmp_path / "a.json").stat().st_mode & 0o777) == "0o644"


def test_device_plugin_specs_are_written_at_start_and_kept_current(tmp_path: Path) -> None:
    devices = Devices(tmp_path / "devices.yaml", device_specs(2))
    backend = _backend(devices.path)
    specs = cdi.DeviceSpecs(tmp_path / "cdi", "krakenplug.pcl.ac.cn", backend)
    assert specs.update(backend.devices())
    path = tmp_path / "cdi" / "krakenplug.pcl.ac.cn_fake.json"
    written = json.loads(path.read_text())
    assert written["kind"] == "krakenplug.pcl.ac.cn/fake" and written["cdiVersion"] == cdi.CDI_VERSION
    assert [d["name"] for d in written["devices"]] == ["fake-0", "fake-1"]
    assert written["devices"][1]["containerEdits"] == {
        "deviceNodes": [{"path": "/dev/krakenplug-fake1", "hostPath": "/dev/null", "permissions": "rw"}]}
    assert specs.cdi_id(backend.devices()[0]) == "krakenplug.pcl.ac.cn/fake=fake-0"
    assert not specs.update(backend.devices())  # unchanged: not rewritten
    devices.write(device_specs(3))
    assert specs.update(backend.devices())
    assert [d["name"] for d in json.loads(path.read_text())["devices"]] == ["fake-0", "fake-1", "fake-2"]
    path.unlink()  # somebody removed it: the next update puts it back
    assert specs.update(backend.devices()) and path.exists()
    assert specs.update([]) and not path.exists()


def test_an_unwritable_directory_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    devices = Devices(tmp_path / "devices.yaml", device_specs(1))
    backend = _backend(devices.path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    specs = cdi.DeviceSpecs(blocker, "krakenplug.pcl.ac.cn", backend)
    assert not specs.update(backend.devices())
    assert not specs.update(backend.devices())
    assert sum("writing CDI specs" in r.getMessage() for r in caplog.records) == 1


def test_a_device_the_backend_cannot_allocate_is_left_out_of_the_specs_and_logged_once(tmp_path: Path,
                                                                                       caplog) -> None:
    devices = Devices(tmp_path / "devices.yaml", device_specs(2))
    backend = _backend(devices.path)
    specs = cdi.DeviceSpecs(tmp_path / "cdi", "krakenplug.pcl.ac.cn", backend)
    assert specs.update(backend.devices())
    data = yaml.safe_load(devices.path.read_text())
    data["faults"] = {"allocate_error": "device node missing"}
    devices.path.write_text(yaml.safe_dump(data))
    path = tmp_path / "cdi" / "krakenplug.pcl.ac.cn_fake.json"
    assert specs.update(backend.devices())  # every entry refused: the vendor's spec goes, the plugin goes on
    assert not path.exists()
    assert not specs.update(backend.devices())
    refusals = [r.getMessage() for r in caplog.records if "could not allocate" in r.getMessage()]
    assert len(refusals) == 2 and "device node missing" in refusals[0]  # once per device, not per update
    del data["faults"]
    devices.path.write_text(yaml.safe_dump(data))
    assert specs.update(backend.devices()) and path.exists()
