"""Events on this node, so that ``kubectl describe node`` shows what the agent did or refused.

Events follow the kubelet's convention for node events: namespace ``default``, involved object
``Node/<name>`` with the node name as UID. Posting is best effort: every Event is logged too, and one
that cannot be posted (no cluster, RBAC, API server down) is only logged, the failure once per cause.
"""

from __future__ import annotations

import datetime
import logging

from kubernetes import client

from krakenplug.transitions import TransitionLog

__all__ = ["EVENT_NAMESPACE", "NodeEvents"]

logger = logging.getLogger(__name__)

EVENT_NAMESPACE = "default"


class NodeEvents:
    """Posts Events about node ``node_name``; ``api_client`` None logs them only."""

    def __init__(self, api_client: client.ApiClient | None, node_name: str, *, component: str = "krakenplug",
                 timeout_seconds: float = 10.0) -> None:
        self._core = client.CoreV1Api(api_client) if api_client is not None else None
        self._node = node_name
        self._component = component
        self._timeout = timeout_seconds
        self._failures = TransitionLog(logger)

    def post(self, *, reason: str, message: str, event_type: str = "Warning") -> bool:
        """Logs the Event and records it on the node; True when the API server took it. Never raises."""
        logger.log(logging.WARNING if event_type == "Warning" else logging.INFO, "node event %s: %s", reason, message)
        if self._core is None:
            return False
        now = datetime.datetime.now(datetime.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{self._node}.", namespace=EVENT_NAMESPACE),
            involved_object=client.V1ObjectReference(kind="Node", name=self._node, uid=self._node, api_version="v1"),
            reason=reason, message=message, type=event_type, count=1, first_timestamp=now, last_timestamp=now,
            source=client.V1EventSource(component=self._component, host=self._node),
            reporting_component=self._component, reporting_instance=self._node,
        )
        try:
            self._core.create_namespaced_event(EVENT_NAMESPACE, body, _request_timeout=self._timeout)
        except Exception as err:  # noqa: BLE001 - ApiException, urllib3 errors: an Event is best effort
            cause = _short(err)
            self._failures.report("post", cause, logging.WARNING, "cannot post events on node %s: %s",
                                  self._node, cause)
            return False
        self._failures.clear("post", logging.INFO, "posting events on node %s works again", self._node)
        return True


def _short(err: BaseException) -> str:
    status = getattr(err, "status", None)
    if status:
        return f"HTTP {status} {getattr(err, 'reason', None) or ''}".strip()
    return f"{type(err).__name__}: {err}"[:300]
