"""How a server runs, said once: the request limits, the shutdown, the listeners. Plain dataclasses with no
dependency, so the CLI takes its flags' defaults from here without the serve extra installed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """What one request may cost. Bytes bound the wire; pixels bound the decoded images (a 1-bit PNG of a
    few hundred bytes can declare 64 million pixels)."""

    #: A batch of 64 ImageNet-size FP32 tensors is 38.5 MB; raise --max-body-mb for larger batches.
    max_body_bytes: int = 64 << 20
    #: Encoded images in one request to ``<model>_image`` (each becomes one row of the batch).
    max_images: int = 64
    #: Decoded pixels of all the images of one request together: 16.8 MP is one 12 MP phone photo with room to
    #: spare, or 16,384 CIFAR images. One RGB image of that size is 48 MiB decoded.
    max_request_pixels: int = 1 << 24
    #: A connection must send its request headers within this time (then 408 and closed).
    header_timeout_s: float = 10.0
    #: A request body must arrive within this time (then 408).
    body_timeout_s: float = 60.0


@dataclass(frozen=True)
class Shutdown:
    """A rollout-safe stop: readiness turns 503 for ``drain_delay_s`` while requests are still served (so load
    balancers stop routing here), then no new connections, and what is in flight finishes; all of it within
    ``grace_s`` (Kubernetes' default terminationGracePeriodSeconds is 30)."""

    drain_delay_s: float = 5.0
    grace_s: float = 30.0


DEFAULT_METRICS_PORT = 8002  # Triton's metrics port


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None
    metrics_port: int | None = DEFAULT_METRICS_PORT  # None: no separate metrics listener
    limits: Limits = field(default_factory=Limits)
    shutdown: Shutdown = field(default_factory=Shutdown)
    log_level: str = "warning"
