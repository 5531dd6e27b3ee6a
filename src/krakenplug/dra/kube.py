"""The resource.k8s.io/v1 calls the driver makes, through the official ``kubernetes`` client.

Responses are read as plain JSON (``_preload_content=False``): only the fields the driver uses matter,
and a newer API server's extra fields must never break it. Every failure becomes an :class:`ApiError`
naming the call, the HTTP status and a hint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from krakenplug import errors

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


class ClusterUnavailable(errors.KrakenplugError):
    """No cluster configuration: not in a pod and no kubeconfig, or the kubeconfig is unusable."""


class ApiError(errors.KrakenplugError):
    """A call failed; ``status`` is the HTTP status, None when no answer came back."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def connect(kubeconfig: Path | None) -> client.ApiClient:
    """An API client from ``kubeconfig``, or from the pod's service account when it is None."""
    configuration = client.Configuration()
    configuration.retries = urllib3.Retry(total=1, connect=1, read=1, redirect=0, status=0)
    try:
        if kubeconfig is not None:
            api_client: client.ApiClient = config.new_client_from_config(
                config_file=str(kubeconfig), persist_config=False, client_configuration=configuration)
            return api_client
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration=configuration)
    except (ConfigException, OSError, ValueError, TypeError) as err:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config"
        raise ClusterUnavailable(f"{where}: {err}") from err


class ResourceApi:
    """ResourceSlices of one node and driver, and ResourceClaim reads."""

    def __init__(self, api_client: client.ApiClient, *, timeout_seconds: float) -> None:
        self._api = client.ResourceV1Api(api_client)
        self._timeout = timeout_seconds

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Json:
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

    def get_claim(self, namespace: str, name: str) -> Json:
        return self._call(f"get resourceclaim {namespace}/{name}", self._api.read_namespaced_resource_claim,
                          name, namespace)


def _message(err: ApiException) -> str:
    try:
        body = json.loads(err.body or "")
        return str(body.get("message") or err.reason)
    except (ValueError, AttributeError):
        return str(err.reason or "")
