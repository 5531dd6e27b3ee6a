"""The resource.k8s.io/v1 calls the driver makes, through the official ``kubernetes`` client.

Responses are read as plain JSON (``_preload_content=False``): only the fields the driver uses matter,
and a newer API server's extra fields must never break it. Every failure becomes an :class:`ApiError`
naming the call, the HTTP status and a hint.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from krakenplug import errors
from krakenplug.cluster import config as cluster_config

logger = logging.getLogger(__name__)

Json = dict[str, Any]

_HINTS = {
    401: "the API server rejected our credentials (service account token or kubeconfig user)",
    403: "RBAC: the service account needs create/update/delete/list/watch on resourceslices and get on "
         "resourceclaims (resource.k8s.io)",
    404: "not found",
    409: "the object changed meanwhile (or already exists)",
    422: "the API server refused the object",
}


class ApiError(errors.KubeApiError):
    """A resource.k8s.io call failed."""


class ResourceApi:
    """ResourceSlices of one node and driver, and ResourceClaim reads."""

    def __init__(self, connect: Callable[[], client.ApiClient], *, timeout_seconds: float) -> None:
        """``connect`` is called at the first request, and again after it failed (no cluster yet)."""
        self._connect = connect
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._resource: client.ResourceV1Api | None = None

    @property
    def _api(self) -> client.ResourceV1Api:
        with self._lock:
            if self._resource is None:
                try:
                    self._resource = client.ResourceV1Api(self._connect())
                except cluster_config.ClusterUnavailable as err:
                    raise ApiError(f"no API server configuration: {err}") from err
            return self._resource

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
            data = response.data
        except ApiException as err:
            hint = _HINTS.get(err.status or 0, "")
            raise ApiError(f"{what}: HTTP {err.status} {_message(err)}" + (f" ({hint})" if hint else ""),
                           status=err.status) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise ApiError(f"{what}: no answer from the API server: {err}") from err
        try:
            parsed = json.loads(data) if data else {}
        except ValueError as err:
            raise ApiError(f"{what}: the API server's answer is not JSON: {err}") from err
        if not isinstance(parsed, dict):
            raise ApiError(f"{what}: expected a JSON object, got {type(parsed).__name__}")
        return parsed

    def list_slices(self, *, node: str, driver: str) -> list[Json]:
        selector = f"spec.nodeName={node},spec.driver={driver}"
        found = self._call(f"list resourceslices ({selector})", self._api.list_resource_slice,
                           field_selector=selector)
        return [item for item in found.get("items") or [] if isinstance(item, dict)]

    def create_slice(self, body: Json) -> Json:
        name = body["metadata"]["name"]
        return self._call(f"create resourceslice {name}", self._api.create_resource_slice, body)

    def replace_slice(self, body: Json) -> Json:
        name = body["metadata"]["name"]
        return self._call(f"update resourceslice {name}", self._api.replace_resource_slice, name, body)

    def delete_slice(self, name: str) -> None:
        try:
            self._call(f"delete resourceslice {name}", self._api.delete_resource_slice, name)
        except ApiError as err:
            if err.status != 404:  # already gone is what we wanted
                raise

    def list_claims(self) -> Json:
        """Every ResourceClaim of the cluster (the claim cache's start)."""
        return self._call("list resourceclaims", self._api.list_resource_claim_for_all_namespaces)

    def watch_claims(self, version: str, *, timeout_seconds: int) -> Any:
        """The raw streaming response of a watch on every ResourceClaim from ``version`` (lines of events)."""
        try:
            response = self._api.list_resource_claim_for_all_namespaces(
                watch=True, resource_version=version or None, allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds, _preload_content=False,
                _request_timeout=(self._timeout, timeout_seconds + self._timeout))
            status = getattr(response, "status", 200)
            if not 200 <= status <= 299:  # a refusal the client handed back unraised: never read it as events
                body = response.data
                response.release_conn()
                raise ApiException(status=status, reason=body.decode(errors="replace")[:200] if body else "")
            return response
        except ApiException as err:
            raise ApiError(f"watch resourceclaims: HTTP {err.status} {_message(err)}", status=err.status) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise ApiError(f"watch resourceclaims: no answer from the API server: {err}") from err

    def get_claim(self, namespace: str, name: str) -> Json:
        return self._call(f"get resourceclaim {namespace}/{name}", self._api.read_namespaced_resource_claim,
                          name, namespace)


def _message(err: ApiException) -> str:
    try:
        body = json.loads(err.body or "")
        return str(body.get("message") or err.reason)
    except (ValueError, AttributeError):
        return str(err.reason or "")
