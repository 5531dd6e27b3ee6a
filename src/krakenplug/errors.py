"""The project's exception hierarchy.

Vendor and library exceptions are wrapped at the boundary where they occur (``raise ... from err``)
so callers only ever handle these types, and the original error stays attached as the cause.
"""


class KrakenplugError(Exception):
    """Base class of every error KrakenPlug raises on purpose."""


class ConfigError(KrakenplugError):
    """A settings file, values file, device file or label is malformed; the message names the field."""


class BackendError(KrakenplugError):
    """A backend could not do what was asked."""


class BackendUnavailable(BackendError):
    """The vendor library or driver cannot be loaded or initialised on this node."""


class DeviceQueryError(BackendError):
    """A query about one device failed or timed out."""


class AllocationError(KrakenplugError):
    """An Allocate or GetPreferredAllocation request cannot be honoured; the message names the device."""


class RegistrationError(KrakenplugError):
    """Registering with the kubelet failed."""


class KubeApiError(KrakenplugError):
    """A Kubernetes API call failed; ``status`` is the HTTP status, None when no answer came back."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
