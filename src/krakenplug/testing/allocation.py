"""The kubelet's choice of devices for one container (pod admission), without the RPCs.

Only what a plugin can observe is modelled: which IDs are offered to GetPreferredAllocation and which
IDs Allocate receives. NUMA alignment with CPUs (Topology Manager) is left out: there are no CPUs here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from krakenplug.testing.errors import AdmissionError
from krakenplug.testing.state import ResourceState

Preferred = Callable[[Sequence[str], Sequence[str], int], Sequence[str]]


def free_healthy(state: ResourceState, taken: Collection[str]) -> list[str]:
    """Healthy devices no active pod holds, in a stable order (the plugin's own listing order)."""
    return [device_id for device_id, view in state.devices.items() if view.healthy and device_id not in taken]


def choose(state: ResourceState, count: int, taken: Collection[str], *, preferred: Preferred | None) -> list[str]:
    """``count`` IDs for a container, asking the plugin's preference first when ``preferred`` is given.

    The answer is intersected with the candidates and any shortfall filled in listing order, as the
    kubelet does: a plugin cannot make it hand out a device that is unhealthy or already in use.
    """
    if count < 1:
        raise AdmissionError(f"a container must request at least one {state.resource_name}, got {count}")
    if state.allocatable == 0:
        raise AdmissionError(f"no healthy devices present; cannot allocate unhealthy devices {state.resource_name}")
    candidates = free_healthy(state, taken)
    if len(candidates) < count:
        raise AdmissionError(f"requested number of devices unavailable for {state.resource_name}. "
                             f"Requested: {count}, Available: {len(candidates)}")
    if preferred is None:
        return candidates[:count]
    picked: list[str] = []
    for device_id in preferred(candidates, [], count):
        if device_id in candidates and device_id not in picked and len(picked) < count:
            picked.append(device_id)
    picked += [device_id for device_id in candidates if device_id not in picked][:count - len(picked)]
    return picked
