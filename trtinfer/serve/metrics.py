"""Prometheus metrics of a server (``prometheus_client``, one private registry per server), in two expositions.

``GET /metrics`` on the main port: trtinfer's names. ``trtinfer_requests_total{model,endpoint,status}``; the
request latency histogram ``trtinfer_request_duration_seconds{model,endpoint,status}`` with failed requests in
it, by status; queue and compute histograms and batch sizes (per batch, from the dynamic batcher); inference
and execution counts; queue depth; and ``process_*`` and ``python_info`` (prometheus_client's process and
platform collectors). Every unknown model name is the one label value ``unknown``
(``ServerState.metric_name``), so the number of series is bounded by the models served, whatever is asked.

``--metrics-port`` (default 8002, Triton's): the same, plus Triton's per-model metrics under Triton's names,
labels (``model``, ``version``; ``reason`` on failures), types and units, so Triton's Grafana dashboards and
autoscalers work unchanged. They are read from the statistics extension's counters (``statistics.py``) at each
scrape, so they and ``/v2/models/<m>/stats`` never disagree. As Triton does, only the metrics port shows them:
the main ``/metrics`` does not carry the same counters twice under two names.

Triton's names, each mirrored from a model's statistics (``ModelStatistics``; the durations are cumulative
microseconds):

===========================================  =======  ==============================================================
``nv_inference_request_success``             counter  requests that succeeded (``success`` count)
``nv_inference_request_failure``             counter  requests that failed (``fail`` count), by ``reason``: REJECTED
                                                      (queue full, or timed out waiting), CANCELED, BACKEND, OTHER
``nv_inference_count``                       counter  rows inferred (``inference_count``)
``nv_inference_exec_count``                  counter  batches run (``execution_count``)
``nv_inference_request_duration_us``         counter  µs of the successful requests (``success`` ns)
``nv_inference_queue_duration_us``           counter  µs waiting for a batch (``queue`` ns)
``nv_inference_compute_input_duration_us``   counter  µs preparing inputs (``compute_input`` ns)
``nv_inference_compute_infer_duration_us``   counter  µs on the backend (``compute_infer`` ns)
``nv_inference_compute_output_duration_us``  counter  µs building responses (``compute_output`` ns)
``nv_inference_pending_request_count``       gauge    requests waiting for a batch now (the batcher's queue)
===========================================  =======  ==============================================================

References, for every name above (Triton 2.x):

* triton-inference-server/server ``docs/user_guide/metrics.md`` ("Inference Request Metrics": the Counts table,
  "Failure Count Categories", "Pending Request Count (Queue Size) Per-Model", and "Latencies / Counters"),
  https://github.com/triton-inference-server/server/blob/main/docs/user_guide/metrics.md
* triton-inference-server/core ``src/metrics.cc`` (each family's name and type: the durations are counters of
  microseconds, the pending count a gauge), ``src/metric_model_reporter.cc`` (the ``model`` and ``version``
  labels; the four failure reasons, each series created at 0) and ``src/infer_stats.cc`` (Triton adds the
  durations of successful requests, in whole microseconds; here the queue and compute_infer durations are
  those of every request a batch ran, as the statistics count them),
  https://github.com/triton-inference-server/core/blob/main/src/metric_model_reporter.cc

prometheus_client writes every counter as ``<name>_total``, which is not Triton's name, so Triton's families are
written by :func:`render` (the text format, 0.0.4, which is what Triton serves).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector,
                               generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from ..errors import DataError
from .registry import VERSION, ModelSet
from .statistics import FAILURE_REASONS, Statistics

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Triton's cumulative durations: (name, the statistics duration it mirrors, help).
TRITON_DURATIONS = (
    ("nv_inference_request_duration_us", "success",
     "Cumulative duration of the successful inference requests (microseconds)"),
    ("nv_inference_queue_duration_us", "queue", "Cumulative time inference requests waited for a batch (microseconds)"),
    ("nv_inference_compute_input_duration_us", "compute_input",
     "Cumulative time preparing inference inputs (microseconds)"),
    ("nv_inference_compute_infer_duration_us", "compute_infer", "Cumulative time running the model (microseconds)"),
    ("nv_inference_compute_output_duration_us", "compute_output",
     "Cumulative time building inference outputs (microseconds)"),
)


def _queue_depth(model: Any) -> Any:
    def depth() -> float:
        return float(model.stats().queue_depth)

    return depth


class TritonCollector:
    """A prometheus Collector of Triton's per-model metrics, read from ``statistics`` at each ``collect()``
    (one consistent snapshot per scrape) and the batchers' queues. Its counters carry Triton's names without
    ``_total``: write them with :func:`render`, not ``generate_latest``."""

    def __init__(self, statistics: Statistics, models: ModelSet) -> None:
        self.statistics, self.models = statistics, models

    def collect(self) -> Iterator[Metric]:
        snapshot = self.statistics.snapshot()
        success = Metric("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
                         "counter")
        failure = Metric("nv_inference_request_failure", "Number of failed inference requests, all batch sizes, "
                         "by reason", "counter")
        count = Metric("nv_inference_count", "Number of inferences performed (rows)", "counter")
        executions = Metric("nv_inference_exec_count", "Number of model executions performed (batches)", "counter")
        durations = [(Metric(name, help_, "counter"), key) for name, key, help_ in TRITON_DURATIONS]
        pending = Metric("nv_inference_pending_request_count", "Number of inference requests waiting for a batch",
                         "gauge")
        for stats in snapshot:
            labels = {"model": stats.name, "version": VERSION}
            success.add_sample(success.name, labels, stats.durations["success"].count)
            for reason in FAILURE_REASONS:
                failure.add_sample(failure.name, {**labels, "reason": reason}, stats.failures.get(reason, 0))
            count.add_sample(count.name, labels, stats.inference_count)
            executions.add_sample(executions.name, labels, stats.execution_count)
            for metric, key in durations:
                metric.add_sample(metric.name, labels, stats.durations[key].ns // 1000)
            served = self.models.models.get(stats.name)
            if served is not None:
                pending.add_sample(pending.name, labels, served.model.stats().queue_depth)
        yield from (success, failure, count, executions, *(m for m, _ in durations), pending)


def _escape(value: str, quote: bool = True) -> str:
    escaped = value.replace("\\", r"\\").replace("\n", r"\n")
    return escaped.replace('"', r"\"") if quote else escaped


def render(families: Iterable[Metric]) -> bytes:
    """The text exposition format (0.0.4) of ``families``, each under its own name and type as given."""
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape(family.documentation, quote=False)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
            lines.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}" if labels
                         else f"{sample.name} {floatToGoString(sample.value)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""


class Metrics:
    def __init__(self, models: ModelSet) -> None:
        self.models = models
        self.registry = CollectorRegistry()
        self.triton: TritonCollector | None = None
        self._metrics_server: ThreadingHTTPServer | None = None
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter("trtinfer_requests", "HTTP and gRPC requests by model, endpoint and status",
                                ["model", "endpoint", "status"], registry=r)
        self.request_seconds = Histogram("trtinfer_request_duration_seconds",
                                         "Request latency in the server, failed requests included, by status",
                                         ["model", "endpoint", "status"], buckets=LATENCY_BUCKETS, registry=r)
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
        """One request has been answered with ``status`` (``model``: a served name or ``unknown``)."""
        code = str(status)
        self.requests.labels(model, endpoint, code).inc()
        if seconds is not None:
            self.request_seconds.labels(model, endpoint, code).observe(seconds)

    def triton_collector(self, statistics: Statistics) -> TritonCollector:
        """Mirror ``statistics`` under Triton's names on the metrics port (``ServerState`` calls this once)."""
        self.triton = TritonCollector(statistics, self.models)
        return self.triton

    def exposition(self) -> bytes:
        """The main port's ``/metrics``."""
        return generate_latest(self.registry)

    def triton_exposition(self) -> bytes:
        """The metrics port's ``/metrics``: the main exposition and Triton's names."""
        return self.exposition() + (render(self.triton.collect()) if self.triton is not None else b"")

    def serve_triton(self, host: str, port: int) -> None:
        """Serve :meth:`triton_exposition` at ``http://host:port/metrics`` from a daemon thread, as Triton does
        on 8002; any other path is a JSON 404."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's name
                if self.path.split("?", 1)[0] == "/metrics":
                    body, status, kind = metrics.triton_exposition(), 200, CONTENT_TYPE
                else:
                    body, status, kind = b'{"error": "this port serves /metrics only"}', 404, "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- no access log, as on the main port
                pass

        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server_class = type("MetricsServer", (ThreadingHTTPServer,), {"address_family": family})
            self._metrics_server = server_class((host, port), Handler)
        except OSError as exc:
            raise DataError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                            hint="choose another --metrics-port, or --metrics-port 0 for none") from None
        threading.Thread(target=self._metrics_server.serve_forever, name="trtinfer-metrics", daemon=True).start()
