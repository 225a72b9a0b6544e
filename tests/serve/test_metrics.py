"""Prometheus metrics of a real server: ``/metrics`` on the main port (``trtinfer_*`` and ``process_*``) and
``--metrics-port`` (also Triton's ``nv_inference_*`` names, mirrored from the statistics extension), checked
with real requests over HTTP and gRPC and, where Debian's prometheus package is installed, with ``promtool``."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest

from .conftest import request

grpcclient = pytest.importorskip("tritonclient.grpc")

ROWS = 2
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [ROWS, 3, 32, 32],
                               "data": [0.25] * (ROWS * 3072)}]}).encode()
BAD_SHAPE = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 31, 32],
                                    "data": [0.25] * 2976}]}).encode()
#: A request that times out in the queue (the schedule-policy timeout, 1 µs): Triton's failure reason REJECTED.
TIMED_OUT = json.dumps({"parameters": {"timeout": 1}, **json.loads(BODY)}).encode()
JSON = {"Content-Type": "application/json"}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match, f"not an exposition line: {line!r}"
            out.append((match[1], dict(_LABEL.findall(match[2] or "")), float(match[3])))
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for n, have, v in samples(text) if n == name and labels.items() <= have.items())


def types(text: str) -> dict[str, str]:
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))


def main_metrics(server) -> str:
    status, headers, body = server.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return body.decode()


def port_metrics(server) -> str:
    status, headers, body = request(f"http://127.0.0.1:{server.metrics_port}/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return body.decode()


def grpc_infer(server, model: str) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
    import numpy as np

    tensor.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(grpcclient.InferenceServerException):
        client.infer(model, [tensor])
    client.close()


# -- trtinfer's own metrics -----------------------------------------------------------------------------------------
def test_failed_requests_are_in_the_latency_histogram_by_status(server):
    before = main_metrics(server)
    assert server.post("/v2/models/tiny/infer", BAD_SHAPE, JSON)[0] == 400
    assert server.post("/v2/models/tiny/infer", BODY, JSON)[0] == 200
    assert server.post("/v2/models/not-a-model/infer", BODY, JSON)[0] == 404
    grpc_infer(server, "another-unknown-model")
    after = main_metrics(server)
    histogram = "trtinfer_request_duration_seconds"
    for labels, added in ((dict(model="tiny", endpoint="infer", status="400"), 1),
                          (dict(model="tiny", endpoint="infer", status="200"), 1),
                          (dict(model="unknown", endpoint="infer", status="404"), 1),
                          (dict(model="unknown", endpoint="grpc_infer", status="404"), 1)):
        assert value(after, histogram + "_count", **labels) == value(before, histogram + "_count", **labels) + added, \
            labels
        assert value(after, histogram + "_bucket", le="+Inf", **labels) == value(after, histogram + "_count", **labels)
        assert value(after, histogram + "_sum", **labels) > 0


def test_process_metrics_on_both_ports(server):
    for text in (main_metrics(server), port_metrics(server)):
        assert value(text, "process_resident_memory_bytes") > 10 << 20
        assert value(text, "process_cpu_seconds_total") > 0
        assert value(text, "process_open_fds") > 0
        assert "python_info{" in text


# -- Triton's names on the metrics port ---------------------------------------------------------------------------
TRITON_COUNTERS = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                   "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                   "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_inference_compute_output_duration_us")


def _settled(server) -> tuple[str, dict]:
    """The metrics port's exposition and the statistics document, read once the last batch has been counted."""
    deadline = time.monotonic() + 10
    while True:
        text = port_metrics(server)
        stats = json.loads(server.get("/v2/models/tiny/stats")[2])["model_stats"][0]
        infer = stats["inference_stats"]
        if value(text, "nv_inference_count", model="tiny") == stats["inference_count"] and \
                value(text, "nv_inference_request_success", model="tiny") == infer["success"]["count"] or \
                time.monotonic() > deadline:
            return text, stats
        time.sleep(0.05)


def test_triton_names_on_the_metrics_port_count_what_was_served(server):
    before, _ = _settled(server)
    n = 3
    for _ in range(n):
        assert server.post("/v2/models/tiny/infer", BODY, JSON)[0] == 200
    assert server.post("/v2/models/tiny/infer", BAD_SHAPE, JSON)[0] == 400
    assert server.post("/v2/models/tiny/infer", TIMED_OUT, JSON)[0] == 504
    after, stats = _settled(server)

    declared = types(after)
    for name in TRITON_COUNTERS:
        assert declared.get(name) == "counter", name  # Triton's names exactly: no "_total" added
    assert declared.get("nv_inference_pending_request_count") == "gauge"
    tiny = {"model": "tiny", "version": "1"}

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **tiny, **labels) - value(before, name, **tiny, **labels)

    assert delta("nv_inference_request_success") == n
    assert delta("nv_inference_count") == n * ROWS
    assert 1 <= delta("nv_inference_exec_count") <= n
    assert delta("nv_inference_request_failure", reason="OTHER") == 1  # a malformed request: Triton's OTHER
    assert delta("nv_inference_request_failure", reason="REJECTED") == 1  # timed out waiting for a batch
    assert {labels["reason"] for name, labels, _ in samples(after) if name == "nv_inference_request_failure"} == \
        {"REJECTED", "CANCELED", "BACKEND", "OTHER"}
    for name in ("nv_inference_request_duration_us", "nv_inference_compute_infer_duration_us"):
        assert delta(name) > 0, name
    for name in ("nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
                 "nv_inference_compute_output_duration_us"):
        assert delta(name) >= 0, name
    assert value(after, "nv_inference_pending_request_count", **tiny) == 0  # nothing waits between requests

    # the same numbers as the statistics extension, in microseconds
    infer = stats["inference_stats"]
    assert value(after, "nv_inference_request_success", **tiny) == infer["success"]["count"]
    assert value(after, "nv_inference_request_failure", **tiny) == infer["fail"]["count"]
    assert value(after, "nv_inference_count", **tiny) == stats["inference_count"]
    assert value(after, "nv_inference_exec_count", **tiny) == stats["execution_count"]
    for name, key in (("request", "success"), ("queue", "queue"), ("compute_input", "compute_input"),
                      ("compute_infer", "compute_infer"), ("compute_output", "compute_output")):
        assert value(after, f"nv_inference_{name}_duration_us", **tiny) == infer[key]["ns"] // 1000, name

    assert "nv_inference_" not in main_metrics(server)  # Triton shows its names on the metrics port only


# -- cardinality ------------------------------------------------------------------------------------------------------
def test_unknown_model_names_do_not_grow_the_metrics(server):
    grpc_infer(server, "warm-up-unknown")  # the one "unknown" series each transport may add
    assert server.post("/v2/models/warm-up-unknown/infer", BODY, JSON)[0] == 404
    before = {"main": main_metrics(server), "port": port_metrics(server)}
    names = [f"m-{uuid.uuid4().hex}" for _ in range(1000)]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for name in names:
        connection.request("POST", f"/v2/models/{name}/infer", b"{}", JSON)
        response = connection.getresponse()
        response.read()
        assert response.status == 404
    connection.close()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(__import__("numpy").zeros((1, 3, 32, 32), "float32"))
    for name in names:
        with pytest.raises(grpcclient.InferenceServerException):
            client.infer(name, [tensor])
    client.close()
    for where, text in (("main", main_metrics(server)), ("port", port_metrics(server))):
        assert not any(name in text for name in names[:50] + names[-50:]), where
        old = {(n, tuple(sorted(labels.items()))) for n, labels, _ in samples(before[where])}
        new = {(n, tuple(sorted(labels.items()))) for n, labels, _ in samples(text)}
        assert len(new - old) == 0, (where, sorted(new - old)[:10])  # 2,000 names, not one new series
        assert len(text) < 64 << 10, (where, len(text))


# -- promtool -------------------------------------------------------------------------------------------------------------
#: What promtool's linter says about Triton's own names, which are mirrored exactly (Triton's counters have no
#: "_total", its durations are in "_us", and its counts end in "_count"): dashboards query these names, so they stay.
TRITON_LINT = ('counter metrics should have "_total" suffix', "metric names should not contain abbreviated units",
               'non-histogram and non-summary metrics should not have "_count" suffix')


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "no promtool here (Debian's prometheus package: apt-get install prometheus)"
        if os.environ.get("CI"):  # CI installs it (scripts/triton_server.sh, as root): a skip would hide a red
            pytest.fail(message + " (CI=true: the promtool check must run in CI)", pytrace=False)
        pytest.skip(message)
    return found


def test_promtool_checks_both_expositions(server):
    tool = promtool()
    assert server.post("/v2/models/tiny/infer", BAD_SHAPE, JSON)[0] == 400  # failure series exist
    main = subprocess.run([tool, "check", "metrics"], input=main_metrics(server), capture_output=True, text=True,
                          timeout=60)
    assert main.returncode == 0 and not (main.stdout + main.stderr).strip(), main.stdout + main.stderr

    text = port_metrics(server)
    assert "nv_inference_request_success{" in text
    port = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    problems = [line.split(" ", 1) for line in (port.stdout + port.stderr).strip().splitlines()]
    assert port.returncode in (0, 3), port.stdout + port.stderr  # 3: lint problems only, the text parses
    unexpected = [p for p in problems if len(p) != 2 or not p[0].startswith("nv_") or p[1] not in TRITON_LINT]
    assert not unexpected, unexpected
