"""An API server stand-in for resource.k8s.io/v1 ResourceSlices and ResourceClaims, for the real client.

It serves, on http://127.0.0.1:<port>, what a DRA driver calls, with the API server's rules where the
driver depends on them:

* ``resourceslices``: list (``fieldSelector`` on ``spec.nodeName``, ``spec.driver``, ``spec.pool.name``),
  create (409 when the name exists), get, replace (``metadata.resourceVersion`` must match: 409) and
  delete (404 when absent);
* validation as in ``k8s.io/kubernetes/pkg/apis/resource/validation`` for what drivers get wrong:
  driver and pool names, DNS-label device names, unique device names, at most 128 devices per slice
  (64 once a device has taints), at most 32 attributes and capacities per device, qualified names
  (domain <= 63, id <= 32), string and version values <= 64 characters, version values semver, taint
  effects, shared counters (``sharedCounters`` or ``devices`` in one slice, at most 8 counter sets, 1 to 32
  counters each, DNS-label names; ``consumesCounters`` at most 2 per device, one per counter set, and 64
  devices per slice once one consumes counters); a violation answers 422 with a ``Status`` naming the field;
* what the server fills in: ``resourceVersion``, ``uid``, ``timeAdded`` of taints, and quantities in
  their canonical form (``81920Mi`` comes back as ``80Gi``);
* ``resourceclaims``: get, list and watch (every namespace; events for claims put or deleted), from
  claims a test (a stand-in scheduler: :meth:`allocate`, which also shares
  devices that allow multiple allocations by their memory capacity, and, like the scheduler, refuses a pool
  whose devices consume counters it does not define and never lets allocated devices consume more of a
  counter than the pool has) put there.

Every request is recorded; faults (a status, for the next requests of a method) can be queued.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from krakenplug.testing.api_stand_in import ApiStandIn, Json, JsonHandler, status_object as _status

_PREFIX = "/apis/resource.k8s.io/v1"
_SLICES = re.compile(rf"^{_PREFIX}/resourceslices(?:/([^/]+))?$")
_CLAIM = re.compile(rf"^{_PREFIX}/namespaces/([^/]+)/resourceclaims/([^/]+)$")
_ALL_CLAIMS = f"{_PREFIX}/resourceclaims"
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|Pi)?$")
_BINARY = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50}
MAX_DEVICES = 128
MAX_DEVICES_WITH_TAINTS = 64
MAX_ATTRIBUTES = 32
MAX_COUNTER_SETS = 8
MAX_COUNTERS = 32
MAX_CONSUMPTIONS = 2


def _subdomain(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 253 and all(_LABEL.match(part) for part in name.split("."))


def canonical_quantity(text: str) -> str:
    """The API server's canonical form of a binary quantity (what it writes back)."""
    match = _QUANTITY.match(text)
    if not match:
        return text
    value = int(match.group(1)) * _BINARY[match.group(2) or ""]
    if value == 0:
        return "0"
    for suffix in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        if value % _BINARY[suffix] == 0:
            return f"{value // _BINARY[suffix]}{suffix}"
    return str(value)


def slice_problems(obj: Any) -> list[str]:
    """Why the API server would refuse this ResourceSlice (empty when it would take it)."""
    if not isinstance(obj, dict):
        return ["body: must be an object"]
    problems: list[str] = []
    if not _subdomain((obj.get("metadata") or {}).get("name")):
        problems.append("metadata.name: must be a DNS subdomain")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return problems + ["spec: required"]
    if not _subdomain(spec.get("driver")) or len(spec["driver"]) > 63:
        problems.append(f"spec.driver: {spec.get('driver')!r} must be a DNS subdomain of at most 63 characters")
    pool = spec.get("pool") or {}
    if not isinstance(pool.get("name"), str) or not pool["name"]:
        problems.append("spec.pool.name: required")
    if not isinstance(pool.get("generation"), int) or pool["generation"] < 0:
        problems.append("spec.pool.generation: must be a non-negative integer")
    if not isinstance(pool.get("resourceSliceCount"), int) or pool["resourceSliceCount"] < 1:
        problems.append("spec.pool.resourceSliceCount: must be at least 1")
    if "sharedCounters" in spec and "devices" in spec:
        problems.append("spec: only one of `sharedCounters` or `devices` is allowed")
    problems.extend(_counter_set_problems(spec.get("sharedCounters") or []))
    devices = spec.get("devices") or []
    limit = MAX_DEVICES_WITH_TAINTS if any(d.get("taints") or d.get("allowMultipleAllocations")
                                           or d.get("consumesCounters")
                                           for d in devices if isinstance(d, dict)) else MAX_DEVICES
    if len(devices) > limit:
        problems.append(f"spec.devices: {len(devices)} devices, at most {limit} allowed")
    seen: set[str] = set()
    for position, device in enumerate(devices):
        problems.extend(_device_problems(device, f"spec.devices[{position}]", seen))
    return problems


def _unique_label_problems(name: Any, seen: set[str], where: str) -> list[str]:
    """A name that must be a DNS label and unique among its siblings (``seen``, which takes it)."""
    if not isinstance(name, str) or len(name) > 63 or not _LABEL.match(name):
        return [f"{where}: {name!r} must be a DNS label"]
    if name in seen:
        return [f"{where}: duplicate {name!r}"]
    seen.add(name)
    return []


def _counters_problems(counters: Any, where: str) -> list[str]:
    """A counters map: 1 to 32 entries, DNS-label names, quantity values."""
    if not isinstance(counters, dict) or not counters:
        return [f"{where}: required"]
    problems = [f"{where}: {len(counters)} counters, at most {MAX_COUNTERS}"] if len(counters) > MAX_COUNTERS else []
    for key, value in counters.items():
        if not isinstance(key, str) or len(key) > 63 or not _LABEL.match(key):
            problems.append(f"{where}[{key}]: must be a DNS label")
        if not isinstance((value or {}).get("value"), str) or not _QUANTITY.match(value["value"]):
            problems.append(f"{where}[{key}].value: must be a quantity")
    return problems


def _counter_set_problems(sets: Any) -> list[str]:
    if not isinstance(sets, list):
        return ["spec.sharedCounters: must be a list"]
    problems = [f"spec.sharedCounters: {len(sets)} counter sets, at most {MAX_COUNTER_SETS}"] \
        if len(sets) > MAX_COUNTER_SETS else []
    seen: set[str] = set()
    for position, counter_set in enumerate(sets):
        where = f"spec.sharedCounters[{position}]"
        name = (counter_set or {}).get("name") if isinstance(counter_set, dict) else None
        problems.extend(_unique_label_problems(name, seen, f"{where}.name"))
        problems.extend(_counters_problems((counter_set or {}).get("counters") if isinstance(counter_set, dict)
                                           else None, f"{where}.counters"))
    return problems


def _consumption_problems(consumptions: Any, where: str) -> list[str]:
    if not isinstance(consumptions, list):
        return [f"{where}: must be a list"]
    problems = [f"{where}: {len(consumptions)} entries, at most {MAX_CONSUMPTIONS}"] \
        if len(consumptions) > MAX_CONSUMPTIONS else []
    seen: set[str] = set()
    for position, consumption in enumerate(consumptions):
        entry = consumption if isinstance(consumption, dict) else {}
        name = entry.get("counterSet")
        problems.extend(_unique_label_problems(name, seen, f"{where}[{position}].counterSet"))
        problems.extend(_counters_problems(entry.get("counters"), f"{where}[{position}].counters"))
    return problems


def pool_counter_problems(slices: Iterable[Json]) -> list[str]:
    """What makes a pool unusable to the scheduler: a device consuming a counter set or counter the pool's
    slices do not define (the API server cannot see across slices; the scheduler refuses such a pool)."""
    sets = counter_sets(slices := list(slices))
    problems = []
    for item in slices:
        for device in item["spec"].get("devices") or []:
            for consumption in device.get("consumesCounters") or []:
                known = sets.get(consumption.get("counterSet"))
                if known is None:
                    problems.append(f"device {device['name']}: counter set {consumption.get('counterSet')!r} "
                                    "is not in the pool")
                    continue
                problems.extend(f"device {device['name']}: counter {name!r} is not in set "
                                f"{consumption['counterSet']!r}" for name in consumption.get("counters") or {}
                                if name not in known)
    return problems


def counter_sets(slices: Iterable[Json]) -> dict[str, dict[str, int]]:
    """Counter set name -> counter -> amount, over the pool's slices."""
    return {counter_set["name"]: {name: _bytes(value["value"]) or 0 for name, value in counter_set["counters"].items()}
            for item in slices for counter_set in item["spec"].get("sharedCounters") or []}


def _device_problems(device: Any, where: str, seen: set[str]) -> list[str]:
    if not isinstance(device, dict):
        return [f"{where}: must be an object"]
    problems = _unique_label_problems(device.get("name"), seen, f"{where}.name")
    attributes, capacity = device.get("attributes") or {}, device.get("capacity") or {}
    if len(attributes) + len(capacity) > MAX_ATTRIBUTES:
        problems.append(f"{where}: {len(attributes) + len(capacity)} attributes and capacities, at most 32")
    for key, value in attributes.items():
        problems.extend(_qualified_problems(key, f"{where}.attributes"))
        kinds = [kind for kind in ("int", "bool", "string", "version") if kind in (value or {})]
        if len(kinds) != 1:
            problems.append(f"{where}.attributes[{key}]: exactly one of int, bool, string, version")
            continue
        typed = value[kinds[0]]
        if kinds[0] in ("string", "version") and (not isinstance(typed, str) or len(typed) > 64):
            problems.append(f"{where}.attributes[{key}].{kinds[0]}: at most 64 characters")
        if kinds[0] == "version" and isinstance(typed, str) and not _SEMVER.match(typed):
            problems.append(f"{where}.attributes[{key}].version: {typed!r} is not semver 2.0")
        if kinds[0] == "int" and (not isinstance(typed, int) or isinstance(typed, bool)):
            problems.append(f"{where}.attributes[{key}].int: must be an integer")
    for key, value in capacity.items():
        problems.extend(_qualified_problems(key, f"{where}.capacity"))
        if not isinstance((value or {}).get("value"), str) or not _QUANTITY.match(value["value"]):
            problems.append(f"{where}.capacity[{key}].value: must be a quantity")
            continue
        policy = value.get("requestPolicy")
        if policy is not None:
            problems.extend(_policy_problems(policy, value["value"], f"{where}.capacity[{key}].requestPolicy"))
            if not device.get("allowMultipleAllocations"):
                problems.append(f"{where}.capacity[{key}].requestPolicy: only with allowMultipleAllocations")
    if "consumesCounters" in device:
        problems.extend(_consumption_problems(device["consumesCounters"], f"{where}.consumesCounters"))
    for position, taint in enumerate(device.get("taints") or []):
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            problems.append(f"{where}.taints[{position}].effect: {taint.get('effect')!r} must be NoSchedule or NoExecute")
        value = taint.get("value") or ""
        if len(value) > 63 or (value and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value)):
            problems.append(f"{where}.taints[{position}].value: {value!r} must be a label value")
    return problems


def _bytes(quantity: Any) -> int | None:
    match = _QUANTITY.match(quantity) if isinstance(quantity, str) else None
    return int(match.group(1)) * _BINARY[match.group(2) or ""] if match else None


def _policy_problems(policy: Any, capacity: str, where: str) -> list[str]:
    """The capacity request policy rules: default within the capacity and on the range's grid."""
    if not isinstance(policy, dict):
        return [f"{where}: must be an object"]
    total, default = _bytes(capacity), _bytes(policy.get("default"))
    valid = policy.get("validRange") or {}
    low, high, step = _bytes(valid.get("min")), _bytes(valid.get("max") or capacity), _bytes(valid.get("step") or "1")
    if default is None or total is None or low is None or high is None or not step:
        return [f"{where}: default and validRange.min must be quantities"]
    if not low <= default <= min(high, total):
        return [f"{where}.default: {policy.get('default')} is outside [{valid.get('min')}, {capacity}]"]
    if (default - low) % step:
        return [f"{where}.default: {policy.get('default')} is not min + a multiple of step"]
    return []


def _qualified_problems(key: str, where: str) -> list[str]:
    domain, slash, ident = key.rpartition("/")
    problems = []
    if slash and (len(domain) > 63 or not _subdomain(domain)):
        problems.append(f"{where}[{key}]: domain must be a DNS subdomain of at most 63 characters")
    if len(ident) > 32 or not _C_IDENTIFIER.match(ident):
        problems.append(f"{where}[{key}]: name must be a C identifier of at most 32 characters")
    return problems


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any
    status: int


class ResourceApiServer(ApiStandIn):
    """See the module docstring; use as a context manager."""

    def __init__(self, *, partitionable_devices: bool = True) -> None:
        """``partitionable_devices`` False: the feature gate DRAPartitionableDevices is off (the default before
        Kubernetes 1.36), and the server drops ``sharedCounters`` and ``consumesCounters`` from what it stores."""
        self._partitionable = partitionable_devices
        self._lock = threading.Condition()
        self._slices: dict[str, Json] = {}
        self._claims: dict[tuple[str, str], Json] = {}
        self._claim_events: list[tuple[int, str, Json]] = []  # (resourceVersion, type, claim), for watches
        self._closing = False
        self._watches = 0
        self._faults: list[tuple[str | None, int]] = []
        self.requests: list[Request] = []
        super().__init__(self._handler_class(), thread_name="fake-resource-api", first_version=1000)

    def _closing_down(self) -> None:
        with self._lock:
            self._closing = True  # open watches end
            self._lock.notify_all()

    # -- state -----------------------------------------------------------------------------------

    def slices(self, *, driver: str | None = None) -> list[Json]:
        with self._lock:
            return [copy.deepcopy(s) for _, s in sorted(self._slices.items())
                    if driver is None or s["spec"].get("driver") == driver]

    def slice_devices(self, *, driver: str | None = None) -> dict[str, Json]:
        """Every published device by name."""
        return {device["name"]: device for item in self.slices(driver=driver)
                for device in item["spec"].get("devices") or []}

    def put_slice(self, obj: Json) -> None:
        """Somebody else's slice (another agent's, a stale one)."""
        with self._lock:
            stored = copy.deepcopy(obj)
            stored["metadata"].update(resourceVersion=self._bump(), uid=str(uuid.uuid4()))
            self._slices[stored["metadata"]["name"]] = stored

    def delete_slice(self, name: str) -> None:
        """Somebody else deletes a slice (the kubelet does for a driver that stayed unregistered)."""
        with self._lock:
            self._slices.pop(name, None)
            self._lock.notify_all()

    def wait_for(self, predicate: Callable[[ResourceApiServer], Any], timeout: float = 15.0) -> Any:
        """Waits until ``predicate(self)`` is truthy after some change; raises TimeoutError."""
        with self._lock:
            result = self._lock.wait_for(lambda: predicate(self), timeout=timeout)
        if not result:
            raise TimeoutError("the API stand-in never reached the expected state")
        return result

    def writes(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method in ("POST", "PUT", "DELETE", "PATCH")]

    def fail(self, status: int, *, method: str | None = None, times: int = 1) -> None:
        with self._lock:
            self._faults.extend((method, status) for _ in range(times))

    def put_claim(self, claim: Json) -> Json:
        """Stores a ResourceClaim as given (tests use it for malformed ones)."""
        with self._lock:
            metadata = claim.setdefault("metadata", {})
            key = (metadata.get("namespace", "default"), metadata.get("name", ""))
            kind = "MODIFIED" if key in self._claims else "ADDED"
            metadata["resourceVersion"] = self._bump()
            self._claims[key] = copy.deepcopy(claim)
            self._claim_events.append((int(metadata["resourceVersion"]), kind, copy.deepcopy(claim)))
            self._lock.notify_all()
            return claim

    def delete_claim(self, namespace: str, name: str) -> None:
        with self._lock:
            claim = self._claims.pop((namespace, name), None)
            if claim is not None:
                gone = copy.deepcopy(claim)
                gone["metadata"]["resourceVersion"] = self._bump()
                self._claim_events.append((int(gone["metadata"]["resourceVersion"]), "DELETED", gone))
                self._lock.notify_all()

    def watching(self) -> int:
        """How many claim watches are open."""
        with self._lock:
            return self._watches

    def _watch_claims(self, since: int, timeout: float, send: Callable[[bytes], None]) -> None:
        """Streams the claim events after ``since`` until ``timeout`` or the stand-in closes."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._watches += 1
        try:
            while True:
                with self._lock:
                    self._lock.wait_for(lambda: self._closing or (self._claim_events and
                                                                  self._claim_events[-1][0] > since),
                                        timeout=max(0.0, min(0.5, deadline - time.monotonic())))
                    events = [event for event in self._claim_events if event[0] > since]
                    closing = self._closing
                for version, kind, claim in events:
                    send(json.dumps({"type": kind, "object": claim}).encode() + b"\n")
                    since = version
                if closing or time.monotonic() >= deadline:
                    return
        finally:
            with self._lock:
                self._watches -= 1

    def allocate(self, namespace: str, name: str, *, driver: str, node: str, count: int = 1,
                 pick: Callable[[Json], bool] = lambda device: True, request: str = "req",
                 config: Iterable[Json] = (), uid: str | None = None, exclude: Iterable[str] = (),
                 memory: str | None = None) -> Json:
        """A stand-in scheduler: allocates ``count`` untainted published devices of ``driver`` that ``pick``
        accepts, and stores the claim reserved for a pod on ``node``. ``memory`` (a quantity) asks for that
        share of devices that allow multiple allocations, as a capacity request would (DRAConsumableCapacity).
        Raises LookupError when too few fit."""
        with self._lock:
            return self._allocate(namespace, name, driver=driver, node=node, count=count, pick=pick, request=request,
                                  config=config, uid=uid, exclude=exclude, memory=memory)

    def _allocate(self, namespace: str, name: str, *, driver: str, node: str, count: int,
                  pick: Callable[[Json], bool], request: str, config: Iterable[Json], uid: str | None,
                  exclude: Iterable[str], memory: str | None) -> Json:
        held: dict[str, list[int | None]] = {}  # device -> bytes each claim holds (None: all of it)
        for claim in self._claims.values():
            for device_name, consumed in _allocated(claim):
                held.setdefault(device_name, []).append(consumed)
        wanted = _bytes(memory) if memory else None
        excluded = set(exclude)

        pool = [item for item in self.slices(driver=driver) if item["spec"]["pool"]["name"] == node]
        invalid = pool_counter_problems(pool)
        if invalid:
            raise LookupError(f"pool {node} of {driver} is invalid: " + "; ".join(invalid))
        left = counter_sets(pool)  # what allocated devices have not consumed yet
        published = self.slice_devices(driver=driver)
        for device_name in held:
            for consumption in (published.get(device_name) or {}).get("consumesCounters") or []:
                for counter, value in consumption["counters"].items():
                    left[consumption["counterSet"]][counter] -= _bytes(value["value"]) or 0

        def counters_fit(device: Json, chosen: list[Json]) -> bool:
            for consumption in [c for d in (*chosen, device) for c in d.get("consumesCounters") or []]:
                for counter, value in consumption["counters"].items():
                    need = sum(_bytes(c["counters"][counter]["value"]) or 0 for d in (*chosen, device)
                               for c in d.get("consumesCounters") or []
                               if c["counterSet"] == consumption["counterSet"] and counter in c["counters"])
                    if need > left[consumption["counterSet"]][counter]:
                        return False
            return True

        def fits(device: Json) -> bool:
            if device["name"] in excluded or device.get("taints") or not pick(device):
                return False
            holders = held.get(device["name"], [])
            if wanted is None:
                return not holders
            capacity = (device.get("capacity") or {}).get("krakenplug.pcl.ac.cn/memory") or {}
            total = _bytes(capacity.get("value")) or 0
            return bool(device.get("allowMultipleAllocations")) and None not in holders and \
                sum(h or 0 for h in holders) + wanted <= total

        free: list[Json] = []
        for _, device in sorted(published.items()):
            if len(free) < count and fits(device) and counters_fit(device, free):
                free.append(device)
        if len(free) < count:
            raise LookupError(f"only {len(free)} free devices of {driver} match, {count} requested")
        results = [{"request": request, "driver": driver, "pool": node, "device": device["name"]}
                   for device in free]
        if memory:
            for result in results:
                result.update(shareID=str(uuid.uuid4()), consumedCapacity={"krakenplug.pcl.ac.cn/memory": memory})
        claim = {
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"namespace": namespace, "name": name, "uid": uid or str(uuid.uuid4())},
            "spec": {"devices": {"requests": [{"name": request, "exactly": {"deviceClassName": driver,
                                                                             "count": count}}]}},
            "status": {
                "allocation": {
                    "devices": {"results": results, "config": [{"source": "FromClaim", **c} for c in config]},
                    "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": [node]}]}]},
                },
                "reservedFor": [{"resource": "pods", "name": f"{name}-pod", "uid": str(uuid.uuid4())}],
            },
        }
        return self.put_claim(claim)


    # -- HTTP ------------------------------------------------------------------------------------

    def _answer(self, method: str, target: str, body: Any) -> tuple[int, Json]:
        with self._lock:
            for index, (wanted, status) in enumerate(self._faults):
                if wanted in (None, method):
                    self._faults.pop(index)
                    return status, _status(status, "injected failure")
        url = urlsplit(target)
        match = _SLICES.match(url.path)
        if match:
            return self._slice_call(method, match.group(1), parse_qs(url.query), body)
        if url.path == _ALL_CLAIMS and method == "GET":
            with self._lock:
                items = [copy.deepcopy(claim) for _, claim in sorted(self._claims.items())]
                return 200, {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimList",
                             "metadata": {"resourceVersion": str(self._version)}, "items": items}
        match = _CLAIM.match(url.path)
        if match and method == "GET":
            with self._lock:
                claim = self._claims.get((match.group(1), match.group(2)))
            if claim is None:
                return 404, _status(404, f'resourceclaims.resource.k8s.io "{match.group(2)}" not found', "NotFound")
            return 200, copy.deepcopy(claim)
        return 404, _status(404, f"the stand-in has no route for {method} {url.path}", "NotFound")

    def _slice_call(self, method: str, name: str | None, query: dict[str, list[str]], body: Any) -> tuple[int, Json]:
        with self._lock:
            if name is None and method == "GET":
                return 200, self._list(query)
            if name is None and method == "POST":
                return self._store(body, create=True)
            if name is None:
                return 405, _status(405, f"{method} on the collection")
            current = self._slices.get(name)
            if current is None:
                return 404, _status(404, f'resourceslices.resource.k8s.io "{name}" not found', "NotFound")
            if method == "GET":
                return 200, copy.deepcopy(current)
            if method == "PUT":
                if not isinstance(body, dict) or (body.get("metadata") or {}).get("name") != name:
                    return 400, _status(400, "metadata.name does not match the URL")
                return self._store(body, create=False)
            if method == "DELETE":
                del self._slices[name]
                self._lock.notify_all()
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
            return 405, _status(405, f"{method} is not supported here")

    def _list(self, query: dict[str, list[str]]) -> Json:
        wanted: dict[str, str] = {}
        for selector in query.get("fieldSelector", []):
            for term in selector.split(","):
                key, _, value = term.partition("=")
                wanted[key] = value
        fields = {"spec.nodeName": lambda s: s["spec"].get("nodeName"), "spec.driver": lambda s: s["spec"].get("driver"),
                  "spec.pool.name": lambda s: s["spec"]["pool"].get("name")}
        items = [copy.deepcopy(s) for _, s in sorted(self._slices.items())
                 if all(key in fields and fields[key](s) == value for key, value in wanted.items())]
        return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList",
                "metadata": {"resourceVersion": str(self._version)}, "items": items}

    def _store(self, body: Any, *, create: bool) -> tuple[int, Json]:
        problems = slice_problems(body)
        if problems:
            return 422, _status(422, "ResourceSlice is invalid: " + "; ".join(problems), "Invalid")
        name = body["metadata"]["name"]
        current = self._slices.get(name)
        if create and current is not None:
            return 409, _status(409, f'resourceslices.resource.k8s.io "{name}" already exists', "AlreadyExists")
        if not create and body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:  # type: ignore[index]
            return 409, _status(409, f'Operation cannot be fulfilled on resourceslices.resource.k8s.io "{name}": '
                                     "the object has been modified", "Conflict")
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = self._bump()
        stored["metadata"]["uid"] = current["metadata"]["uid"] if current else str(uuid.uuid4())
        if not self._partitionable:  # a disabled field is dropped, as the API server's strategy does
            stored["spec"].pop("sharedCounters", None)
            for device in stored["spec"].get("devices") or []:
                device.pop("consumesCounters", None)
        for device in stored["spec"].get("devices") or []:
            for taint in device.get("taints") or []:
                taint.setdefault("timeAdded", "2026-01-01T00:00:00Z")
            for capacity in (device.get("capacity") or {}).values():
                capacity["value"] = canonical_quantity(capacity["value"])
            for consumption in device.get("consumesCounters") or []:
                for counter in consumption["counters"].values():
                    counter["value"] = canonical_quantity(counter["value"])
        for counter_set in stored["spec"].get("sharedCounters") or []:
            for counter in counter_set["counters"].values():
                counter["value"] = canonical_quantity(counter["value"])
        self._slices[name] = stored
        self._lock.notify_all()
        return (201 if create else 200), copy.deepcopy(stored)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real API server: the client reuses connections
            disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart (delayed ACK)

            def _serve(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if self.command == "GET" and url.path == _ALL_CLAIMS and query.get("watch") == ["true"]:
                    self._watch(query)
                    return
                raw = self.read_body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                status, payload = server._answer(self.command, self.path, body)
                with server._lock:
                    server.requests.append(Request(self.command, self.path, body, status))
                self.send_json(status, payload)

            def _watch(self, query: dict[str, list[str]]) -> None:
                with server._lock:
                    fault = next((i for i, (method, _) in enumerate(server._faults) if method in (None, "GET")), None)
                    status = server._faults.pop(fault)[1] if fault is not None else 200
                    server.requests.append(Request("WATCH", self.path, None, status))
                if status != 200:
                    self.send_json(status, _status(status, "injected failure"))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def send(data: bytes) -> None:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                try:
                    server._watch_claims(int((query.get("resourceVersion") or ["0"])[0] or 0),
                                         float((query.get("timeoutSeconds") or ["300"])[0]), send)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = _serve

        return Handler


def _allocated(claim: Any) -> list[tuple[str, int | None]]:
    """(device, bytes consumed or None for all) a stored claim holds; a malformed claim holds none."""
    try:
        return [(result["device"], _bytes((result.get("consumedCapacity") or {}).get("krakenplug.pcl.ac.cn/memory")))
                for result in claim["status"]["allocation"]["devices"]["results"]]
    except (KeyError, TypeError, AttributeError):
        return []
