"""Finding the API server the way kubectl does.

In order: an explicit kubeconfig (``--kubeconfig`` or the settings file), the ``KUBECONFIG`` environment
variable (a list of files separated by ``:``, merged as kubectl merges them), the pod's service account
(in-cluster), and ``~/.kube/config``. Nothing found is :class:`ClusterUnavailable`, never a crash: the
callers then run without the API server and say so once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from krakenplug import errors

__all__ = ["ClusterUnavailable", "connect", "describe_source"]


class ClusterUnavailable(errors.KrakenplugError):
    """No cluster configuration: not in a pod and no kubeconfig, or the kubeconfig is unusable."""


def _source(kubeconfig: Path | str | None, environ: Mapping[str, str]) -> str | None:
    """The kubeconfig to load, or None for in-cluster."""
    if kubeconfig:
        return str(kubeconfig)
    if environ.get("KUBECONFIG"):
        return environ["KUBECONFIG"]
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    home = Path(environ.get("HOME") or Path.home()) / ".kube" / "config"
    return str(home) if home.is_file() else None


def describe_source(kubeconfig: Path | str | None, environ: Mapping[str, str] | None = None) -> str:
    """Where :func:`connect` would look, for log lines."""
    source = _source(kubeconfig, os.environ if environ is None else environ)
    return f"kubeconfig {source}" if source else "in-cluster configuration"


def connect(kubeconfig: Path | str | None = None, *, environ: Mapping[str, str] | None = None) -> client.ApiClient:
    """An API client for the first configuration found (see the module docstring)."""
    environ = os.environ if environ is None else environ
    source = _source(kubeconfig, environ)
    configuration = client.Configuration()
    # One quick retry covers a pooled connection the server closed meanwhile; anything longer is the
    # caller's backoff, which logs what happened.
    configuration.retries = urllib3.Retry(total=1, connect=1, read=1, redirect=0, status=0)
    try:
        if source is not None:
            return config.new_client_from_config(config_file=source, persist_config=False,
                                                 client_configuration=configuration)
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration=configuration)
    except (ConfigException, OSError, ValueError, TypeError) as err:
        where = f"kubeconfig {source}" if source else "in-cluster config"
        raise ClusterUnavailable(f"{where}: {err}") from err
