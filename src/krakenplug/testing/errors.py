"""Errors the simulated kubelet raises to its caller, with the gRPC status when a plugin caused them."""

from __future__ import annotations

import grpc


def go_code_name(code: grpc.StatusCode) -> str:
    """The name Go's status package prints: INVALID_ARGUMENT -> InvalidArgument."""
    return "OK" if code is grpc.StatusCode.OK else "".join(part.capitalize() for part in code.name.split("_"))


class PluginCallError(Exception):
    """A call from the kubelet to a device plugin failed; carries the method and the gRPC status."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(f"{method}: rpc error: code = {go_code_name(code)} desc = {details}")

    @classmethod
    def from_rpc_error(cls, method: str, err: grpc.RpcError) -> PluginCallError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(method, code, details or "")


class AdmissionError(Exception):
    """Pod admission failed, as the kubelet would fail it (UnexpectedAdmissionError on a real node).

    ``code``, ``details`` and ``method`` are set when a plugin call caused the failure, else None.
    """

    def __init__(self, message: str, *, cause: PluginCallError | None = None) -> None:
        super().__init__(message)
        self.method = cause.method if cause else None
        self.code = cause.code if cause else None
        self.details = cause.details if cause else None
