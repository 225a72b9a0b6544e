"""Prometheus metrics of a server (``prometheus_client``, one registry per app): requests by model and
status, request / queue / compute latency histograms, batch sizes, queue depth, and inference and
execution counts (Triton's ``nv_inference_count`` / ``nv_inference_exec_count``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .registry import ModelSet

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _queue_depth(model: Any) -> Any:
    def depth() -> float:
        return float(model.stats().queue_depth)

    return depth


class Metrics:
    def __init__(self, models: ModelSet) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("trtinfer_requests", "HTTP and gRPC requests by model, endpoint and status",
                                ["model", "endpoint", "status"], registry=r)
        self.request_seconds = Histogram("trtinfer_request_duration_seconds", "Request latency in the server",
                                         ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("trtinfer_queue_duration_seconds", "Time a request waited for its batch",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.compute_seconds = Histogram("trtinfer_compute_duration_seconds", "Time a batch ran on the backend",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("trtinfer_batch_size", "Rows per batch the dynamic batcher ran", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inferences = Counter("trtinfer_inference_count", "Rows inferred (images)", ["model"], registry=r)
        self.executions = Counter("trtinfer_execution_count", "Batches executed", ["model"], registry=r)
        self.queue_depth = Gauge("trtinfer_queue_depth", "Requests waiting for a batch", ["model"], registry=r)
        for served in models.models.values():
            name = served.name
            self.queue_depth.labels(name).set_function(_queue_depth(served.model))
            served.model.add_batch_observer(self._observer(name))

    def _observer(self, name: str) -> Any:
        queue, compute = self.queue_seconds.labels(name), self.compute_seconds.labels(name)
        batch, inferences, executions = self.batch_size.labels(name), self.inferences.labels(name), \
            self.executions.labels(name)

        def observe(rows: int, ok: bool, queued: list[float], compute_s: float | None) -> None:
            batch.observe(rows)
            executions.inc()
            if ok:
                inferences.inc(rows)
            for seconds in queued:
                queue.observe(seconds)
            if compute_s is not None:
                compute.observe(compute_s)

        return observe

    def record(self, model: str, endpoint: str, status: int, seconds: float | None = None) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()
        if seconds is not None:
            self.request_seconds.labels(model, endpoint).observe(seconds)

    def serve_triton(self, host: str, port: int) -> None:
        """Serve Triton's metric names on their own port (as Triton does on 8002)."""
        # TODO(issue 28): Triton's names; for now the same exposition
        from prometheus_client import start_http_server

        start_http_server(port, host, registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
