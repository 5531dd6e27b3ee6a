"""Names the resource.k8s.io API accepts: driver, device (DNS label) and slice (DNS subdomain) names.

Shared: the DRA driver publishes devices under these names, and the exporter reads them back from the
kubelet's PodResources ``dynamic_resources`` to attribute DRA-allocated devices to pods.
"""

from __future__ import annotations

import hashlib
import re

DOMAIN = "krakenplug.pcl.ac.cn"
_LABEL_MAX = 63
_SUBDOMAIN_MAX = 253
_NOT_LABEL = re.compile(r"[^a-z0-9-]+")


def driver_name(configured: str | None, backend: str) -> str:
    """The configured driver, else ``<backend>.krakenplug.pcl.ac.cn``."""
    return configured or f"{dns_label(backend)}.{DOMAIN}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def dns_label(text: str) -> str:
    """A DNS label (RFC 1123, <= 63) for ``text``: lowercased, other characters as '-'.

    When that changed more than the case, or had to be cut, a hash of the original keeps two different
    IDs from colliding (``GPU-1`` and ``gpu_1`` differ).
    """
    label = _NOT_LABEL.sub("-", text.lower()).strip("-")
    if label and label == text.lower() and len(label) <= _LABEL_MAX:
        return label
    keep = _LABEL_MAX - 9
    stem = label[:keep].rstrip("-") or "x"
    return f"{stem}-{_digest(text)}"


def slice_name(node: str, driver: str, index: int) -> str:
    """``<node>-<driver>-<index>``, a DNS subdomain; long names are cut and made unique by a hash."""
    name = f"{node}-{driver}-{index}".lower()
    if len(name) <= _SUBDOMAIN_MAX:
        return name
    suffix = f"-{_digest(name)}-{index}"
    return name[:_SUBDOMAIN_MAX - len(suffix)].rstrip("-.") + suffix
