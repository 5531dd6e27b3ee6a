"""The two Node calls discovery needs (get and patch), through the official ``kubernetes`` client.

Responses are read as plain JSON rather than through the client's generated models: only
``metadata.labels`` and ``metadata.resourceVersion`` matter, and a newer API server's extra Node
fields must never break labelling. Every failure becomes a :class:`NodeApiError` that says what was
attempted, the HTTP status and a hint, so the daemon can log it and retry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from krakenplug import errors

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"

_HINTS = {
    401: "the API server rejected our credentials (service account token or kubeconfig user)",
    403: "RBAC: the service account needs 'get' and 'patch' on nodes (a ClusterRole)",
    404: "no such node: check node_name (NODE_NAME from the downward API in the chart)",
    409: "the node changed between our read and our patch",
    422: "the API server refused the labels",
}


class ClusterUnavailable(errors.KrakenplugError):
    """No cluster configuration: not in a pod and no kubeconfig, or the kubeconfig is unusable."""


class NodeApiError(errors.KrakenplugError):
    """A node read or patch failed; ``status`` is the HTTP status, None when no answer came back."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclasses.dataclass(frozen=True)
class NodeLabels:
    labels: dict[str, str]
    resource_version: str


def connect(kubeconfig: Path | None) -> client.ApiClient:
    """An API client from ``kubeconfig``, or from the pod's service account when it is None."""
    configuration = client.Configuration()
    # One quick retry covers a pooled connection the server closed meanwhile; anything longer is
    # the daemon's backoff, which logs what happened.
    configuration.retries = urllib3.Retry(total=1, connect=1, read=1, redirect=0, status=0)
    try:
        if kubeconfig is not None:
            return config.new_client_from_config(config_file=str(kubeconfig), persist_config=False,
                                                 client_configuration=configuration)
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration=configuration)
    except (ConfigException, OSError, ValueError, TypeError) as err:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config"
        raise ClusterUnavailable(f"{where}: {err}") from err


class NodeClient:
    """Reads and patches the labels of one node."""

    def __init__(self, api_client: client.ApiClient, node_name: str, *, timeout_seconds: float) -> None:
        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._node = node_name
        self._timeout = timeout_seconds

    @property
    def server(self) -> str:
        return str(self._api_client.configuration.host)

    def read(self) -> NodeLabels:
        response = self._call("reading node", self._core.read_node, self._node)
        return self._labels_of(response, action="reading node")

    def patch_labels(self, changes: Mapping[str, str | None], *, resource_version: str) -> NodeLabels:
        """A JSON merge patch of ``metadata.labels`` (None removes a key).

        With ``resource_version`` in the patch the API server applies it only to that version of the
        node and answers 409 otherwise, so a decision based on a stale read never lands.
        """
        body = {"metadata": {"resourceVersion": resource_version, "labels": dict(changes)}}
        response = self._call("patching labels of node", self._core.patch_node, self._node, body,
                              _content_type=MERGE_PATCH)
        return self._labels_of(response, action="patching labels of node")

    def close(self) -> None:
        self._api_client.close()

    def _call(self, action: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
            try:
                return response.data
            finally:
                response.release_conn()
        except ApiException as err:
            raise NodeApiError(self._describe_status(action, err), status=err.status) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            cause = err.reason if isinstance(err, urllib3.exceptions.MaxRetryError) else err
            # NewConnectionError (refused, unresolvable) subclasses ConnectTimeoutError in urllib3.
            timed_out = not isinstance(cause, urllib3.exceptions.NewConnectionError)
            if timed_out and isinstance(cause, urllib3.exceptions.TimeoutError):
                raise NodeApiError(f"{action} {self._node}: no answer from {self.server} "
                                   f"within {self._timeout:g} s") from err
            raise NodeApiError(f"{action} {self._node}: cannot reach {self.server}: {cause}") from err

    def _describe_status(self, action: str, err: ApiException) -> str:
        message = f"{action} {self._node}: HTTP {err.status} {err.reason or ''}".rstrip()
        detail = _status_message(err.body)
        if detail:
            message += f": {detail}"
        hint = _HINTS.get(err.status or 0)
        return f"{message} ({hint})" if hint else message

    def _labels_of(self, raw: bytes, *, action: str) -> NodeLabels:
        try:
            metadata = json.loads(raw)["metadata"]
            found = metadata.get("labels") or {}
            version = str(metadata.get("resourceVersion") or "")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise NodeApiError(f"{action} {self._node}: the answer is not a Node object: {err}") from err
        if not isinstance(found, dict):
            raise NodeApiError(f"{action} {self._node}: metadata.labels is not a mapping (got {found!r})")
        return NodeLabels(labels={str(k): str(v) for k, v in found.items()}, resource_version=version)


def _status_message(body: Any) -> str:
    """The ``message`` of a Kubernetes Status answer, if the body is one."""
    try:
        return str(json.loads(body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return ""
