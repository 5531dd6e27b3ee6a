"""The kubelet's checks on a RegisterRequest: API version and extended resource name."""

from __future__ import annotations

import json
import re

SUPPORTED_VERSIONS = ("v1beta1",)

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_REQUESTS_PREFIX = "requests."


def is_qualified_name(value: str) -> bool:
    """Kubernetes IsQualifiedName: an optional DNS-1123 subdomain prefix and '/', then a short name."""
    parts = value.split("/")
    if len(parts) > 2:
        return False
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return False
    name = parts[-1]
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME_PART.fullmatch(name))


def is_extended_resource_name(name: str) -> bool:
    """Kubernetes IsExtendedResourceName: 'vendor.com/gpu' passes, 'gpu' and 'kubernetes.io/gpu' do not."""
    if "/" not in name or "kubernetes.io/" in name or name.startswith(_REQUESTS_PREFIX):
        return False
    # Quota names prepend "requests." to the resource name; that form must stay a qualified name.
    return is_qualified_name(_REQUESTS_PREFIX + name)


def register_problem(version: str, resource_name: str) -> str | None:
    """The kubelet's error text for a RegisterRequest it refuses, or None when it accepts it."""
    if version not in SUPPORTED_VERSIONS:
        return (f"requested API version {_quoted(version)} is not supported by kubelet. "
                f"Supported version is {_quoted(SUPPORTED_VERSIONS[0])}")
    if not is_extended_resource_name(resource_name):
        return f"the ResourceName {_quoted(resource_name)} is invalid"
    return None


def _quoted(text: str) -> str:
    # Go's %q: double quotes, so messages read exactly like the kubelet's.
    return json.dumps(text)
