"""Keeping this node's PFs at the wanted VF count, through a backend that implements ``SupportsSriov``.

The wanted count comes from :mod:`.wanted` (node label, config file, option). Before a PF changes, the
kubelet's PodResources API must show that neither the PF nor any of its VFs is allocated to a pod (time-
slicing replicas and hashed IDs decoded by :mod:`krakenplug.replica_ids`); otherwise the change is
deferred to the next reconcile. Refusals and changes are posted as Events on the node. After a change
the device hub re-reads the backend at once, so every component sees the new VFs.
"""

from __future__ import annotations

import logging
import threading

from krakenplug import errors, replica_ids
from krakenplug.backends import base
from krakenplug.cluster import events, nodes
from krakenplug.hub import DeviceHub
from krakenplug.kubelet_podresources import PodResourcesClient, PodResourcesError
from krakenplug.sriov import wanted as sources
from krakenplug.transitions import TransitionLog

__all__ = ["LabelUnknown", "NodeLabel", "SriovController"]

logger = logging.getLogger(__name__)


class LabelUnknown(Exception):
    """The API server could not be asked and no earlier answer is known."""


class NodeLabel:
    """One label of this node: watched (then the last value seen is used) or read on every ask.

    Without an API client the label is simply unset. A failed read keeps the last value read
    successfully, so an API server hiccup never looks like the label being removed.
    """

    def __init__(self, client: nodes.NodeClient | None, key: str | None, *, watch: bool) -> None:
        self.key = key
        self._client = client
        self._watch = watch
        self._lock = threading.Lock()
        self._labels: dict[str, str] | None = None
        self._problems = TransitionLog(logger)

    @property
    def watchable(self) -> bool:
        return self._client is not None and self.key is not None and self._watch

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def value(self) -> str | None:
        """The label's value (None: unset or no API access); LabelUnknown when it was never read."""
        if self._client is None or self.key is None:
            return None
        with self._lock:
            known = self._labels
        if known is None or not self._watch:
            try:
                known = self._client.read().labels
            except nodes.NodeApiError as err:
                if known is None:
                    raise LabelUnknown(f"cannot read node labels: {err}") from err
                self._problems.report("read", str(err), logging.WARNING, "%s; using the last known labels", err)
            else:
                self._problems.clear("read")
                with self._lock:
                    self._labels = known
        return known.get(self.key)

    def watch(self, stop: threading.Event, on_change: threading.Event) -> None:
        """Blocks until ``stop``, setting ``on_change`` whenever the label's value changes."""
        if self._client is None or self.key is None:
            return

        def seen(labels: dict[str, str]) -> None:
            assert self.key is not None
            with self._lock:
                before = None if self._labels is None else self._labels.get(self.key)
                self._labels = labels
            if labels.get(self.key) != before:
                logger.info("node label %s is now %r", self.key, labels.get(self.key))
                on_change.set()

        self._client.watch_labels(stop, seen)


class SriovController:
    """One reconcile brings every PF to the wanted count where that is allowed now."""

    def __init__(self, backend: base.SupportsSriov, hub: DeviceHub, *, node_name: str, label: NodeLabel,
                 node_events: events.NodeEvents, pod_resources: PodResourcesClient) -> None:
        self._backend = backend
        self._options = backend.sriov_options()
        self._hub = hub
        self._node_name = node_name
        self._label = label
        self._events = node_events
        self._pod_resources = pod_resources
        self._problems = TransitionLog(logger)

    @property
    def label(self) -> NodeLabel:
        return self._label

    def close(self) -> None:
        self._pod_resources.close()
        self._label.close()

    def wanted(self) -> sources.WantedVfs:
        """The count of the highest source that sets one; raises SriovRejected or LabelUnknown."""
        return sources.wanted(self._options, self._node_name, self._label.value())

    def reconcile(self) -> bool:
        """Brings every PF to the wanted count where allowed; True when any PF changed (or may have)."""
        pfs = list(self._backend.physical_functions())
        if not pfs:
            return False
        try:
            target = self.wanted()
        except sources.SriovRejected as err:
            self._report("config", "SriovConfigRejected", f"{err}; VFs left as they are")
            return False
        except LabelUnknown as err:
            self._report("config", "", f"{err}; VFs left as they are until the label can be read")
            return False
        self._problems.clear("config")
        if target.count is None:
            return False
        changed = False
        allocated: set[str] | None = None
        for pf in pfs:
            if pf.num_vfs == target.count:
                self._problems.clear(pf.bus_id)
                continue
            if target.count > pf.total_vfs:
                self._report(pf.bus_id, "SriovConfigRejected",
                             f"{target.source}: {target.count} VFs asked for, but {pf.bus_id} supports at most "
                             f"{pf.total_vfs} (sriov_totalvfs); VFs left as they are")
                continue
            try:
                allocated = allocated if allocated is not None else self._allocated(pfs)
            except PodResourcesError as err:
                self._report(pf.bus_id, "SriovChangeDeferred",
                             f"{pf.bus_id}: not changing {pf.num_vfs} to {target.count} VFs: cannot tell whether "
                             f"its devices are in use ({err}); retrying later")
                continue
            changed |= self._change(pf, target, allocated)
        if changed:
            self._hub.refresh()  # every component sees the new devices now, not at the next poll
        return changed

    def _members(self, pf: base.PhysicalFunction) -> set[str]:
        """The IDs under which ``pf`` or its VFs may be allocated: bus IDs and what the hub advertises."""
        bus_ids = {pf.bus_id, *pf.vf_bus_ids}
        return bus_ids | {device.id for device in self._hub.snapshot().devices if device.pci_bus_id in bus_ids}

    def _allocated(self, pfs: list[base.PhysicalFunction]) -> set[str]:
        """Physical IDs of the PFs' devices that pods hold now."""
        decoder = replica_ids.Decoder({member for pf in pfs for member in self._members(pf)})
        held = (decoder.physical_id(allocation.device_id) for allocation in self._pod_resources.list())
        return {device_id for device_id in held if device_id is not None}

    def _change(self, pf: base.PhysicalFunction, target: sources.WantedVfs, allocated: set[str]) -> bool:
        busy = sorted(self._members(pf) & allocated)
        if busy:
            self._report(pf.bus_id, "SriovChangeDeferred",
                         f"{pf.bus_id}: not changing {pf.num_vfs} to {target.count} VFs ({target.source}): "
                         f"allocated to pods: {', '.join(busy)}; retrying later")
            return False
        assert target.count is not None
        try:
            self._backend.set_vf_count(pf.bus_id, target.count)
        except errors.BackendError as err:
            self._report(pf.bus_id, "SriovApplyFailed", str(err))
            return True  # the 0 may have been written: the device set can differ now
        self._problems.clear(pf.bus_id)
        self._events.post(reason="SriovConfigured", event_type="Normal",
                          message=f"{pf.bus_id}: {pf.num_vfs} -> {target.count} VFs ({target.source})")
        return True

    def _report(self, subject: str, reason: str, message: str) -> None:
        """Logs and posts (as an Event with ``reason``) a problem once, until it changes or clears."""
        if not self._problems.report(subject, message, logging.DEBUG, "%s", message):
            return
        if reason:
            self._events.post(reason=reason, message=message)
        else:
            logger.warning("%s", message)
