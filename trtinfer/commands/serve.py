"""``trtinfer serve``: the Open Inference Protocol (HTTP, optionally gRPC), an image endpoint, a web page
and Prometheus metrics for one or more artifacts."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import TrtInferError


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
@click.option("--grace-seconds", default=30.0, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM/SIGINT: time for requests in flight to finish before exit.")
@click.option("--max-body-mb", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Largest request body accepted (413 beyond).")
def serve(artifacts: tuple[Path, ...], host: str, port: int, grpc_port: int | None, name: str | None, backend: str,
          max_batch: int | None, max_delay_ms: float | None, max_queue: int | None, timeout_ms: float | None,
          grace_seconds: float, max_body_mb: int) -> None:
    """Serve ARTIFACTS over the Open Inference Protocol (what Triton and KServe clients speak)."""
    try:
        from trtinfer.serve.registry import ModelSet
        from trtinfer.serve.server import ServeOptions, serve as run
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
    run(models, ServeOptions(host=host, port=port, grpc_port=grpc_port, grace_seconds=grace_seconds,
                             max_body_bytes=max_body_mb << 20))
