"""Resource-name checks and socket file names, one socket per resource in the device-plugin directory."""

from __future__ import annotations

import hashlib
import re

SOCKET_PREFIX = "krakenplug-"
SOCKET_SUFFIX = ".sock"
_MAX_STEM = 40  # keeps /var/lib/kubelet/device-plugins/krakenplug-<stem>-<hash>.sock under 100 bytes
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def resource_name_problem(name: str) -> str | None:
    """Why the kubelet would refuse ``name`` as an extended resource name (its IsExtendedResourceName), or None."""
    if "/" not in name:
        return "it needs a domain prefix, e.g. example.com/gpu"
    if "kubernetes.io/" in name:
        return "the kubernetes.io domain is reserved"
    if name.startswith("requests."):
        return "it must not start with 'requests.'"
    prefix, _, part = ("requests." + name).partition("/")
    if len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix):
        return "the prefix must be a lower-case DNS subdomain"
    if len(part) > 63 or not _NAME_PART.fullmatch(part):
        return "the part after '/' must be at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends"
    return None


def socket_name(resource: str, *, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``krakenplug-<name>.sock`` from the part after the last '/', made filesystem-safe.

    When that name is already ``taken`` (two domains with the same kind) or had to be shortened, a short
    hash of the full resource name keeps it unique and stable.
    """
    stem = _UNSAFE.sub("_", resource.rsplit("/", 1)[-1]).strip("._-") or "resource"
    plain = f"{SOCKET_PREFIX}{stem}{SOCKET_SUFFIX}"
    if len(stem) <= _MAX_STEM and plain not in taken:
        return plain
    digest = hashlib.sha256(resource.encode()).hexdigest()[:8]
    return f"{SOCKET_PREFIX}{stem[:_MAX_STEM]}-{digest}{SOCKET_SUFFIX}"
