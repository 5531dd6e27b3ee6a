"""The vendor-neutral device model and the Backend protocol every vendor implements.

A backend is small on purpose (Intel's device-plugin framework is the model): a snapshot of devices,
what a container needs to use some of them, and samples for metrics. Anything more is an optional
capability protocol that components detect with ``isinstance``.

Units follow the product's metric contract: memory in MB (MiB, 1048576 bytes), utilization in percent.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Backend",
    "BackendClass",
    "BackendOptions",
    "ContainerAllocation",
    "Device",
    "DeviceNode",
    "DeviceSample",
    "Health",
    "Mount",
    "ParentDevice",
    "as_partitions",
    "ResourceRule",
    "SupportsAllocationLimit",
    "SupportsHealthEvents",
    "SupportsLastError",
    "SupportsLibraryInfo",
    "LibraryInfo",
    "SupportsPreferredAllocation",
    "PhysicalFunction",
    "SriovOptions",
    "SupportsSriov",
]


class Health(str, enum.Enum):
    """The kubelet compares against exactly "Healthy"; anything else is unhealthy."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


@dataclasses.dataclass(frozen=True)
class DeviceNode:
    """A device file handed to the container (DeviceSpec in the kubelet API)."""

    host_path: str
    container_path: str = ""
    permissions: str = "rw"

    def __post_init__(self) -> None:
        if not self.container_path:
            object.__setattr__(self, "container_path", self.host_path)


@dataclasses.dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    read_only: bool = True


@dataclasses.dataclass(frozen=True)
class Device:
    """One physical (or SR-IOV virtual) device as a backend sees it at one moment.

    ``id`` is stable across restarts (UUID, serial or PCI bus ID) and is what the kubelet sees.
    ``index`` is the vendor-local index used in env vars and the ``device_index`` metric label.
    """

    id: str
    index: int
    vendor: str
    model: str
    memory_total_mb: int
    resource: str
    numa_node: int | None = None
    health: Health = Health.HEALTHY
    health_reason: str = ""
    pci_bus_id: str | None = None
    uuid: str | None = None
    device_nodes: tuple[DeviceNode, ...] = ()
    # The slice type of a partition of a physical device, as a label-safe name (NVIDIA MIG: "mig-3g.40gb");
    # None for a whole device. Discovery counts devices per partition.
    partition: str | None = None
    # A partition's physical device (MIG: its GPU; SR-IOV: the VF's PF) and what the partition takes of that
    # device's counters, (name, amount) pairs (see ParentDevice); the DRA driver publishes them as shared
    # counters, so the whole device and its partitions are never both allocated.
    parent: ParentDevice | None = None
    consumes: tuple[tuple[str, int], ...] = ()

    @property
    def healthy(self) -> bool:
        return self.health is Health.HEALTHY


COUNTER_PARTITIONS = "partitions"  # one per partition; the whole device takes them all
COUNTER_MEMORY_MB = "memory"  # memory in MB


@dataclasses.dataclass(frozen=True)
class ParentDevice:
    """The physical device that partitions (MIG devices, SR-IOV VFs) are carved from, whole.

    ``counters``: the device's total of every counter its partitions consume, (name, amount) pairs.
    """

    id: str
    index: int
    model: str
    memory_total_mb: int
    pci_bus_id: str | None = None
    counters: tuple[tuple[str, int], ...] = ()


def as_partitions(children: Sequence[Device], *, parent_id: str, index: int, model: str, memory_total_mb: int,
                  pci_bus_id: str | None) -> list[Device]:
    """``children`` as the partitions of one physical device: each takes one ``partitions`` counter and its
    memory; the parent has as many partitions as there are children and its memory (at least their sum)."""
    memory = max(memory_total_mb, sum(child.memory_total_mb for child in children))
    parent = ParentDevice(id=parent_id, index=index, model=model, memory_total_mb=memory_total_mb,
                          pci_bus_id=pci_bus_id,
                          counters=((COUNTER_PARTITIONS, len(children)), (COUNTER_MEMORY_MB, memory)))
    return [dataclasses.replace(child, parent=parent,
                                consumes=((COUNTER_PARTITIONS, 1), (COUNTER_MEMORY_MB, child.memory_total_mb)))
            for child in children]


@dataclasses.dataclass(frozen=True)
class DeviceSample:
    """One reading for metrics; None means the vendor does not offer it (never a fake 0)."""

    utilization_percent: float | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    memory_reserved_mb: float | None = None  # held back by the driver, not in memory_used_mb (NVML v2)


@dataclasses.dataclass(frozen=True)
class ContainerAllocation:
    """What the container needs to use the allocated devices (ContainerAllocateResponse)."""

    envs: dict[str, str] = dataclasses.field(default_factory=dict)
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)


class ResourceRule(BaseModel):
    """Advertise devices whose model matches one of ``models`` (shell globs) under ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Extended resource name, e.g. krakenplug.pcl.ac.cn/nvidia-a100.")
    models: list[str] = Field(min_length=1, description="Model-name globs, matched case-insensitively.")


class BackendOptions(BaseModel):
    """Options every backend accepts under ``backends.<name>``; vendors subclass to add theirs."""

    model_config = ConfigDict(extra="forbid")

    resource_name: str | None = Field(None, description="None: the backend's default resource name.")
    resources: list[ResourceRule] = Field(
        default_factory=list, description="Per-model resource names; first match wins, others use resource_name.",
    )
    dev_root: str = Field("/dev", description="Where device nodes are looked up (host /dev in the chart).")
    sysfs_root: str = Field("/sys", description="Root of sysfs (NUMA node, SR-IOV).")
    library_path: str | None = Field(None, description="Vendor library to load; None searches the usual paths.")
    call_timeout_seconds: float = Field(5.0, gt=0, description="Bound on each vendor library call.")
    health_poll_interval_seconds: float = Field(
        10.0, gt=0, description="Health is re-read at least this often (both directions: devices also recover); "
                                "the device hub polls at the shorter of this and plugin.rescan_interval_seconds.",
    )

    def resource_for(self, model: str, default: str) -> str:
        """The resource a device of ``model`` is advertised under."""
        for rule in self.resources:
            if any(fnmatch.fnmatchcase(model.lower(), pattern.lower()) for pattern in rule.models):
                return rule.name
        return self.resource_name or default


class Backend(Protocol):
    """What every vendor backend provides. Implementations must be thread-safe.

    A backend class also has an ``Options`` model and the constructor ``cls(options, *, node_name)``:
    :class:`BackendClass` is that contract, what the registry builds backends from. Anything beyond
    this is an optional capability below, detected with ``isinstance``.
    """

    name: ClassVar[str]

    def open(self) -> None:
        """Loads and initialises the vendor library; raises BackendUnavailable when it cannot."""

    def close(self) -> None:
        """Releases the vendor library; safe to call twice."""

    def devices(self) -> Sequence[Device]:
        """A full, fresh snapshot of the devices and their health (the device hub is the only caller)."""

    def allocate(self, devices: Sequence[Device]) -> ContainerAllocation:
        """Device nodes, env vars and mounts for a container that gets ``devices``."""

    def sample(self, device: Device) -> DeviceSample:
        """Utilization and memory (plus temperature/power where offered) of one device."""

    def driver_version(self) -> str | None:
        """The vendor driver's version, None when the library does not say."""


class BackendClass(Protocol):
    """A backend class as the registry uses it: its name, its options model and its constructor."""

    @property
    def name(self) -> str: ...

    @property
    def Options(self) -> type[BackendOptions]: ...  # noqa: N802 - the class attribute's name

    # ``options`` is an instance of this class's own ``Options`` (a subclass of BackendOptions), which
    # a parameter type here cannot say; the registry validates it with ``Options`` first.
    def __call__(self, options: Any, /, *, node_name: str = "") -> Backend: ...


@runtime_checkable
class SupportsLastError(Protocol):
    """A backend that can be unavailable at run time (the retrying wrapper) says why."""

    last_error: Exception | None


@runtime_checkable
class SupportsHealthEvents(Protocol):
    """The backend learns of changes itself (XID events, file watches) and says so at once."""

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """Blocks until ``stop`` is set, calling ``changed()`` whenever ``devices()`` may differ."""


@runtime_checkable
class SupportsPreferredAllocation(Protocol):
    def preferred_allocation(self, available: Sequence[Device], must_include: Sequence[Device], size: int) -> list[str]:
        """IDs of ``size`` devices to prefer; must contain every ``must_include`` device."""


@runtime_checkable
class SupportsAllocationLimit(Protocol):
    """The vendor gives a container at most this many devices (StreamComputing: one)."""

    def max_devices_per_container(self) -> int | None: ...


@dataclasses.dataclass(frozen=True)
class LibraryInfo:
    """Which vendor library, API generation and data path a backend uses, and why (for operators).

    ``library``: the file loaded (None: none); ``api``: the API generation in use (e.g. "dcmiv2",
    "cndev struct v6"); ``path``: where device data comes from (e.g. "stcml", "sysfs+stc-smi");
    ``reason``: why this path was taken. The CLI's ``devices`` and the exporter's build info show it.
    """

    library: str | None
    api: str
    path: str
    reason: str = ""

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


@runtime_checkable
class SupportsLibraryInfo(Protocol):
    def library_info(self) -> LibraryInfo: ...


@dataclasses.dataclass(frozen=True)
class PhysicalFunction:
    """An SR-IOV capable device (PF) and its virtual functions (VFs), by PCI bus ID."""

    bus_id: str
    total_vfs: int
    num_vfs: int
    vf_bus_ids: tuple[str, ...] = ()


class SriovOptions(BaseModel):
    """Options of a backend whose devices are SR-IOV PFs; mixed into its Options class.

    The backend only sets VF counts; the SR-IOV component (:mod:`krakenplug.sriov`) reads these to decide
    how many, when a change is safe and where to post Events.
    """

    model_config = ConfigDict(extra="forbid")

    sriov_num_vfs: int | None = Field(
        None, ge=0, description="VFs per device when neither the node label nor the config file sets a count; "
                                "None leaves the devices as they are.",
    )
    sriov_config_file: Path | None = Field(
        None, description="YAML {defaultNumVfs: N, nodes: {<node>: N}} (the chart's ConfigMap); None: not used.",
    )
    sriov_node_label: str | None = Field(None, description="Node label holding the VF count; None: not used.")
    sriov_watch_label: bool = Field(True, description="Watch the node label and re-apply when it changes.")
    kubeconfig: str | None = Field(
        None, description="Kubeconfig for the label and Events; None: discovery.kubeconfig / --kubeconfig, then "
                          "KUBECONFIG, in-cluster, ~/.kube/config.",
    )
    pod_resources_socket: str = Field(
        "/var/lib/kubelet/pod-resources/kubelet.sock", description="Kubelet PodResources socket: which devices pods hold.",
    )
    sriov_vf_wait_seconds: float = Field(10.0, gt=0, description="Bound on waiting for VFs to appear.")


@runtime_checkable
class SupportsSriov(Protocol):
    """The backend can change how many VFs its PFs have; the SR-IOV component decides how many and when."""

    def sriov_options(self) -> SriovOptions:
        """Where the wanted count comes from (node label, config file, option) and the related settings."""

    def physical_functions(self) -> Sequence[PhysicalFunction]:
        """This backend's SR-IOV capable PFs as they are now, sorted by bus ID."""

    def set_vf_count(self, pf_bus_id: str, count: int) -> None:
        """Gives the PF ``count`` VFs (0 disables them); raises errors.BackendError naming what failed."""
