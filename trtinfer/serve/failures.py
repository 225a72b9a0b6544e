"""One table from what went wrong to how each transport answers it: the HTTP status, the gRPC status code, one
line for the client, extra headers, and Triton's failure reason for the statistics and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError, OverloadedError, TrtInferError
from ..runtime import ModelClosedError, RequestTimeout
from .protocol import ProtocolError


class ServeError(Exception):
    """A request the server refuses: the HTTP ``status`` names the failure (the table maps it to gRPC)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Failure:
    status: int            # HTTP
    code: str              # gRPC status code name (grpc.StatusCode.<code>)
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    internal: bool = False  # a server bug: logged with its traceback; client errors are not
    reason: str = "OTHER"   # Triton's failure reason (statistics.FAILURE_REASONS), for nv_inference_request_failure


#: HTTP status -> gRPC status code name.
GRPC_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED",
              415: "INVALID_ARGUMENT", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
              500: "INTERNAL"}
SHUTTING_DOWN = "the server is shutting down"


def failure(exc: BaseException) -> Failure:
    """How a failure is answered: its status, its gRPC code, one line, extra headers, and Triton's reason."""
    reason = "OTHER"
    if isinstance(exc, ServeError):
        status, message, headers = exc.status, exc.message, exc.headers
    elif isinstance(exc, ProtocolError):
        status, message, headers = exc.status, exc.message, {}
    elif isinstance(exc, OverloadedError):
        status, message, headers, reason = 503, exc.one_line(), {"Retry-After": "1"}, "REJECTED"
    elif isinstance(exc, RequestTimeout):
        status, message, headers, reason = 504, exc.one_line(), {}, "REJECTED"
    elif isinstance(exc, ModelClosedError):
        status, message, headers, reason = 503, SHUTTING_DOWN, {"Retry-After": "5"}, "CANCELED"
    elif isinstance(exc, DataError):
        status, message, headers = 400, exc.one_line(), {}
    elif isinstance(exc, TrtInferError):
        return Failure(500, "INTERNAL", exc.one_line(), internal=True, reason="BACKEND")
    else:
        return Failure(500, "INTERNAL", f"internal error: {type(exc).__name__}", internal=True)
    return Failure(status, GRPC_CODES.get(status, "INTERNAL"), message, headers, reason=reason)
