"""A gRPC server with its own worker pool on one unix socket, for the components that serve the kubelet.

The pool belongs to the server: it is made with it and shut down after it, so a stopped server leaves no
worker threads behind (grpc.Server.stop does not end the executor it was given).
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import grpc

STOP_GRACE_SECONDS = 1.0  # in-flight calls get this long to finish; streams are cancelled


class PooledServer:
    """``server`` is a fresh grpc.Server on ``max_workers`` threads; register servicers on it, then ``bind``."""

    def __init__(self, *, max_workers: int, thread_name_prefix: str,
                 maximum_concurrent_rpcs: int | None = None) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers,
                                                               thread_name_prefix=thread_name_prefix)
        self.server = grpc.server(self._executor, maximum_concurrent_rpcs=maximum_concurrent_rpcs)

    def bind(self, path: Path) -> None:
        """Creates the socket file at ``path``; raises RuntimeError when gRPC could not."""
        if not self.server.add_insecure_port(f"unix://{path}"):
            raise RuntimeError("add_insecure_port returned 0")

    def stop(self) -> None:
        """Stops the server (waiting up to the grace period) and then its pool, cancelling queued work."""
        self.server.stop(STOP_GRACE_SECONDS).wait()
        self._executor.shutdown(wait=True, cancel_futures=True)
