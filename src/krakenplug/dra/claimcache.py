"""The ResourceClaims allocated to this node's pool of our driver, kept current by a list + watch.

With ``dra.watch_claims`` on, NodePrepareResources reads a claim the scheduler allocated here from this
cache instead of a GET round trip to the API server; a claim the cache does not hold (not seen yet, or
the watch is down) or holds in a form Prepare refuses (the watch behind the scheduler's last write) is
still read with a GET, and the UID is checked either way. The watch covers every
namespace (ResourceClaims have no field selector for the allocated node), so each agent sees every claim
event of the cluster and keeps only its own: that is the price of the cache (and RBAC ``list``/``watch``
on ``resourceclaims``), which is why it is off by default.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import urllib3
from kubernetes.watch.watch import iter_resp_lines

from krakenplug.dra.kube import ApiError, ResourceApi
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

Json = dict[str, Any]
WATCH_SECONDS = 300  # one watch request's length; the server ends it, we watch again from where it ended


def ours(claim: Json, *, driver: str, pool: str) -> bool:
    """Whether a claim's allocation names a device of ``driver`` in ``pool`` (our node)."""
    try:
        results = claim["status"]["allocation"]["devices"]["results"]
        return any(result.get("driver") == driver and result.get("pool") == pool for result in results)
    except (KeyError, TypeError, AttributeError):
        return False


class ClaimCache:
    """Thread-safe; ``run`` keeps it current until ``stop``."""

    def __init__(self, api: ResourceApi, *, driver: str, pool: str) -> None:
        self._api = api
        self._driver = driver
        self._pool = pool
        self._lock = threading.Lock()
        self._claims: dict[tuple[str, str], Json] = {}
        self._log = TransitionLog(logger)
        self.synced = threading.Event()  # set while the cache follows the server
        self._response: Any = None  # the watch being read, closed at stop

    def get(self, namespace: str, name: str, uid: str) -> Json | None:
        """The cached claim when it has this UID and the cache follows the server, else None (the caller
        GETs it)."""
        if not self.synced.is_set():  # the watch is down: what is cached may be stale
            return None
        with self._lock:
            claim = self._claims.get((namespace, name))
        if claim is None or (claim.get("metadata") or {}).get("uid") != uid:
            return None
        return claim

    def __len__(self) -> int:
        with self._lock:
            return len(self._claims)

    def run(self, stop: threading.Event, *, retry_initial: float, retry_max: float) -> None:
        threading.Thread(target=self._close_at, args=(stop,), daemon=True, name="dra-claim-watch-stop").start()
        delay = retry_initial
        while not stop.is_set():
            try:
                version = self._list()
                delay = retry_initial
                while not stop.is_set():
                    started = time.monotonic()
                    version = self._watch(version, stop)
                    if time.monotonic() - started < 1.0:  # ended at once (a proxy?): never a hot loop
                        stop.wait(retry_initial)
            except ApiError as err:
                self.synced.clear()
                self._log.report("watch", str(err), logging.WARNING, "watching ResourceClaims failed (Prepare "
                                 "reads claims with a GET meanwhile): %s", err)
                stop.wait(delay)
                delay = min(delay * 2, retry_max)

    def _list(self) -> str:
        listed = self._api.list_claims()
        found = {_key(item): item for item in listed.get("items") or []
                 if isinstance(item, dict) and ours(item, driver=self._driver, pool=self._pool)}
        with self._lock:
            self._claims = found
        self.synced.set()
        self._log.clear("watch", logging.INFO, "watching ResourceClaims works again")
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str, stop: threading.Event) -> str:
        """Follows one watch request; returns the resourceVersion to go on from. Raises ApiError to relist."""
        response = self._api.watch_claims(version, timeout_seconds=WATCH_SECONDS)
        with self._lock:
            self._response = response
        if stop.is_set():
            response.close()
            return version
        try:
            for line in iter_resp_lines(response):
                event = json.loads(line) if line else None
                if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                    continue
                kind, claim = event.get("type"), event["object"]
                if kind == "ERROR":  # 410 Gone: the version is too old; relist
                    raise ApiError(f"watch resourceclaims: {claim.get('code')} {claim.get('message')}",
                                   status=claim.get("code"))
                version = str((claim.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                with self._lock:
                    if kind != "DELETED" and ours(claim, driver=self._driver, pool=self._pool):
                        self._claims[_key(claim)] = claim
                    else:
                        self._claims.pop(_key(claim), None)
        except (OSError, ValueError, urllib3.exceptions.HTTPError) as err:
            if stop.is_set():
                return version
            raise ApiError(f"watch resourceclaims: the stream broke: {err}") from err
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        return version

    def _close_at(self, stop: threading.Event) -> None:
        stop.wait()
        with self._lock:
            response = self._response
        if response is not None:  # wake the read of a watch that would last until the server ends it
            shutdown = getattr(response, "shutdown", None)  # urllib3 >= 2.3; close alone does not wake a read
            (shutdown or response.close)()


def _key(claim: Json) -> tuple[str, str]:
    metadata = claim.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
