"""``trtinfer serve``: the Open Inference Protocol (HTTP, optionally gRPC), an image endpoint, a web page
and Prometheus metrics for one or more artifacts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..errors import TrtInferError

from ..serve.options import DEFAULT_METRICS_PORT, Limits, ServeOptions, Shutdown

_LIMITS, _SHUTDOWN = Limits(), Shutdown()

@click.command("serve")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="HTTP port.")
@click.option("--grpc-port", type=click.IntRange(0, 65535), help="Also serve the protocol over gRPC on this port.")
@click.option("--name", help="Serve the (one) artifact under this name instead of its manifest's.")
@click.option("--backend", default="auto", show_default=True, help="auto, tensorrt, onnxruntime or openvino.")
@click.option("--max-batch", type=click.IntRange(1), help="Largest batch the dynamic batcher forms (default: the model's).")
@click.option("--max-delay-ms", type=click.FloatRange(0), help="How long the batcher waits to fill a batch.")
@click.option("--max-queue", type=click.IntRange(1), help="Requests waiting at most; beyond, 503 with Retry-After.")
@click.option("--timeout-ms", type=click.FloatRange(0, min_open=True),
              help="A request not started within this time gets 504.")
@click.option("--grace-seconds", default=_SHUTDOWN.grace_s, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM/SIGINT: the whole stop (drain delay included) ends within this time.")
@click.option("--drain-delay-seconds", default=_SHUTDOWN.drain_delay_s, show_default=True,
              type=click.FloatRange(0),
              help="On SIGTERM: readiness answers 503 for this long while requests are still served, so load "
                   "balancers stop routing here before the listeners close.")
@click.option("--metrics-port", default=DEFAULT_METRICS_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Also serve metrics (Triton's names too) on this port, as Triton does; 0: only /metrics.")
@click.option("--max-body-mb", default=_LIMITS.max_body_bytes >> 20, show_default=True,
              type=click.IntRange(1, 4096), help="Largest request body or gRPC message accepted (413 beyond).")
@click.option("--max-images", default=_LIMITS.max_images, show_default=True, type=click.IntRange(1, 65536),
              help="Most encoded images in one request (400 beyond).")
@click.option("--max-request-mpixels", default=_LIMITS.max_request_pixels / 2**20, show_default=True,
              type=click.FloatRange(0, 4096, min_open=True),
              help="Most decoded pixels (MiP) of one request's images together, checked from each image's header "
                   "before any is decoded (413 beyond).")
@click.option("--header-timeout-seconds", default=_LIMITS.header_timeout_s, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="A connection must send a request's headers within this time (408 and closed beyond).")
@click.option("--body-timeout-seconds", default=_LIMITS.body_timeout_s, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="A request's body must arrive within this time of its headers (408 beyond).")
def serve(artifacts: tuple[Path, ...], host: str, port: int, grpc_port: int | None, name: str | None, backend: str,
          max_batch: int | None, max_delay_ms: float | None, max_queue: int | None, timeout_ms: float | None,
          grace_seconds: float, drain_delay_seconds: float, metrics_port: int, max_body_mb: int, max_images: int,
          max_request_mpixels: float, header_timeout_seconds: float, body_timeout_seconds: float) -> None:
    """Serve ARTIFACTS over the Open Inference Protocol (what Triton and KServe clients speak)."""
    try:
        from trtinfer.serve.registry import ModelSet
        from trtinfer.serve.server import serve as run
    except ImportError as exc:
        raise TrtInferError(f"trtinfer serve needs {exc.name}", hint="pip install 'trtinfer[serve]'") from exc
    runtime = {k: v for k, v in {"max_batch": max_batch, "max_delay_ms": max_delay_ms, "max_queue": max_queue,
                                 "timeout_ms": timeout_ms}.items() if v is not None}
    models = ModelSet.load(list(artifacts), name=name, backend=backend, **runtime)
    for served in models.models.values():
        click.echo(f"serving {served.name} ({served.manifest.precision}, {served.model.backend}) and "
                   f"{served.name}_image from {served.directory}", err=True)
    grpc_text = f", gRPC on {host}:{grpc_port}" if grpc_port is not None else ""
    click.echo(f"listening on http://{host}:{port}{grpc_text} (web page at /, metrics at /metrics)", err=True)
    limits = replace(_LIMITS, max_body_bytes=max_body_mb << 20, max_images=max_images,
                     max_request_pixels=int(max_request_mpixels * 2**20), header_timeout_s=header_timeout_seconds,
                     body_timeout_s=body_timeout_seconds)
    shutdown = Shutdown(drain_delay_s=drain_delay_seconds, grace_s=grace_seconds)
    run(models, ServeOptions(host=host, port=port, grpc_port=grpc_port, metrics_port=metrics_port or None,
                             limits=limits, shutdown=shutdown))
