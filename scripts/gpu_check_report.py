"""The report of ``scripts/gpu_check.sh``: this host's versions, one verdict per phase, and
``report.md`` + ``summary.json`` in which every line says what it proved or why it failed.

    python scripts/gpu_check_report.py versions DIR
    python scripts/gpu_check_report.py report DIR [--no-gpu REASON]

``report`` reads what gpu_check.sh left in DIR (``phases.tsv``: one ``name, exit code, seconds,
limit`` row per phase run; ``<phase>.xml`` junit files; ``doctor.json``; ``inspector-reading.json``;
``nvidia-smi.csv``; ``versions.json``), writes ``report.md`` and ``summary.json``, prints the report
and exits 0 (every phase passed), 1 (a phase failed or did not run) or 2 (no GPU: nothing
GPU-specific was proven).

A pytest phase passes only when its junit XML shows at least one test, every test passed, none was
skipped and pytest exited 0: a run that selects nothing, or skips (under ``-m gpu``, a skip is a
part of the GPU path left unproven), fails. Standard library only: on a host without a GPU this
runs under whatever python3 is there, with or without the project's virtual environment.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

EXIT_PASS, EXIT_FAIL, EXIT_NO_GPU = 0, 1, 2
TIMEOUT_CODES = (124, 137)  # timeout(1): the limit passed (124), or the command was killed after it (137)
NOT_RUN = "not-run"  # phases.tsv's exit code for a phase the time budget left no room for

PHASES_FILE = "phases.tsv"
NVIDIA_SMI_FILE = "nvidia-smi.csv"
VERSIONS_FILE = "versions.json"
DOCTOR_FILE = "doctor.json"
READING_FILE = "inspector-reading.json"  # gpu_inspector_dump.py's READING
REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
DOCTOR_COMMAND = "trtinfer doctor --require gpu --require tensorrt"


@dataclass(frozen=True)
class Phase:
    name: str  # the key in phases.tsv and the stem of its log (and junit XML)
    title: str
    proves: dict[str, str] = field(default_factory=dict)  # pytest phases: test function -> what its pass proves


SETUP = Phase("setup", "environment")
DOCTOR = Phase("doctor", "doctor")
CUDA_LAYER = Phase("cuda-layer", "CUDA layer and runtime", {
    "test_gpu_pinned_device_round_trip": "pinned/device copies round-trip",
    "test_gpu_events_time_and_order_streams": "events time work and order streams",
    "test_gpu_copies_in_both_directions_overlap": "copies in both directions complete (and overlap, with two "
                                                  "copy engines)",
    "test_gpu_graph_capture_and_replay": "CUDA graph capture and replay",
    "test_gpu_a_failed_capture_clears_the_last_error": "a failed graph capture leaves no error or capture behind",
    "test_gpu_no_leak_over_many_cycles": "no device-memory leak over many cycles",
    "test_gpu_torch_tensor_fences_on_torchs_current_stream": "a torch tensor is fenced on torch's current stream",
    "test_gpu_equals_onnxruntime": "TensorRT runtime equals ONNX Runtime at batch 0 to 192",
    "test_gpu_cuda_graphs_on_and_off_agree": "CUDA graphs on and off agree",
    "test_gpu_device_arrays_zero_copy": "zero-copy torch device arrays",
    "test_gpu_pipelining_keeps_consecutive_chunks_in_flight": "two streams give one stream's results, with "
                                                               "consecutive chunks in flight on different lanes",
    "test_gpu_no_leak_over_many_load_close_cycles": "no leak over 1000 load/close cycles",
    "test_gpu_profile_switching_on_one_lane": "profile switching on one lane, with and without graphs",
    "test_gpu_torch_tensor_without_stream_on_a_side_stream": "side-stream torch tensors are fenced without stream=",
    "test_gpu_misaligned_slices": "a misaligned output slice",
    "test_gpu_a_failed_capture_leaves_the_lane_usable": "a lane whose graph capture failed keeps serving without "
                                                        "graphs",
})
INSPECTOR = Phase("inspector", "engine inspector")
ENGINE_BUILD = Phase("engine-build", "engine builds", {
    "test_gpu_engine_matches_onnxruntime": "FP32/FP16/INT8 engines agree with ONNX Runtime on the CIFAR rows "
                                           "(>= 99.5 % top-1) and the inspector's precision check finds "
                                           "FP16/INT8 layers",
    "test_gpu_timing_cache_is_reused": "the timing cache is reused",
    "test_gpu_several_profiles": "several optimization profiles run",
    "test_gpu_mismatch_errors": "plans for another TensorRT or GPU are refused",
    "test_gpu_parser_error_names_the_node": "a parser error names the node",
    "test_gpu_trtinfer_build_end_to_end": "`trtinfer build --require-engine` builds and serves all three precisions",
})
# In the order gpu_check.sh runs them (the inspector dump before the long engine builds, so that a
# squeezed time budget cuts the builds, not the dump).
PHASES = (SETUP, DOCTOR, CUDA_LAYER, INSPECTOR, ENGINE_BUILD)

# Package distributions per component; every one installed is listed.
PACKAGES = (
    ("TensorRT", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings",
                  "tensorrt_bindings")),
    ("cuda-python", ("cuda-python", "cuda-bindings")),
    ("torch", ("torch",)),
    ("torchvision", ("torchvision",)),
    ("ONNX Runtime", ("onnxruntime-gpu", "onnxruntime")),
    ("ModelOpt", ("nvidia-modelopt",)),
    ("onnx", ("onnx",)),
    ("numpy", ("numpy",)),
    ("pytest", ("pytest",)),
    ("trtinfer", ("trtinfer",)),
)


# -- versions -----------------------------------------------------------------------------------------------
def _os_release() -> str:
    """trtinfer doctor's reading where trtinfer imports (this script also runs with a bare python3)."""
    try:
        from trtinfer.doctor import os_release
    except Exception:  # noqa: BLE001 -- a Python without trtinfer: the platform string still says something
        return platform.platform()
    return os_release() or platform.platform()


def collect_versions() -> dict[str, str]:
    """What the Python running this has installed (package metadata only: nothing heavy is imported)."""
    from importlib import metadata

    out = {"OS": _os_release(), "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
           "Python": f"{platform.python_version()} ({sys.executable})"}
    for label, names in PACKAGES:
        found = []
        for name in names:
            try:
                found.append(f"{name} {metadata.version(name)}")
            except metadata.PackageNotFoundError:
                continue
        out[label] = ", ".join(found) or "not installed"
    return out


def read_gpus(path: Path) -> list[dict[str, str]]:
    """``nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv`` -> one dict per GPU."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = [r for r in csv.reader(io.StringIO(text), skipinitialspace=True) if any(c.strip() for c in r)]
    if len(rows) < 2 or rows[0][0].strip() != "name":
        return []
    header = [h.strip() for h in rows[0]]
    return [dict(zip(header, (c.strip() for c in row))) for row in rows[1:]]


def describe_gpu(gpus: list[dict[str, str]]) -> str:
    if not gpus:
        return "an unnamed GPU"
    first = gpus[0]
    facts = [f"driver {first['driver_version']}"] if first.get("driver_version") else []
    if first.get("compute_cap"):
        facts.append(f"sm {first['compute_cap']}")
    more = f" (and {len(gpus) - 1} more GPU(s); CUDA device 0 ran the tests)" if len(gpus) > 1 else ""
    return f"{first.get('name', 'a GPU')}" + (f" ({', '.join(facts)})" if facts else "") + more


# -- junit XML ------------------------------------------------------------------------------------------------
@dataclass
class JunitCounts:
    passed: list[str] = field(default_factory=list)  # test ids
    failed: list[tuple[str, str]] = field(default_factory=list)  # (test id, message); errors included
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (test id, reason); xfails included

    @property
    def total(self) -> int:
        return len(self.passed) + len(self.failed) + len(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {"tests": self.total, "passed": len(self.passed), "failed": len(self.failed),
                "skipped": len(self.skipped)}


def _message(element: ET.Element) -> str:
    text = element.get("message") or (element.text or "").strip() or element.tag
    return " ".join(text.split())[:300]


def read_junit(path: Path) -> JunitCounts | None:
    """Per-test outcomes from pytest's junit XML; None when there is none (or it is not XML)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = JunitCounts()
    for case in root.iter("testcase"):
        test_id = case.get("name") or case.get("classname") or "?"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        skip = case.find("skipped")
        if problem is not None:
            counts.failed.append((test_id, _message(problem)))
        elif skip is not None:
            counts.skipped.append((test_id, _message(skip)))
        else:
            counts.passed.append(test_id)
    return counts


def _function(test_id: str) -> str:
    return test_id.split("[", 1)[0]


def proven(phase: Phase, passed: list[str]) -> list[str]:
    """What the passed tests prove, in the phase's order; tests it does not describe by name."""
    functions = list(dict.fromkeys(_function(t) for t in passed))
    return [text for name, text in phase.proves.items() if name in functions] + \
        [name for name in functions if name not in phase.proves]


def _listed(items: list[tuple[str, str]], limit: int = 3) -> str:
    shown = "; ".join(f"{test} ({why})" for test, why in items[:limit])
    return shown + (f"; +{len(items) - limit} more" if len(items) > limit else "")


def _last_words(log: Path) -> str:
    """The line of a log that says why a run stopped: pytest.exit's reason, else the last line."""
    try:
        lines = [ln.strip(" =!\t") for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [ln for ln in lines if ln]
    for line in reversed(lines):
        if "Exit:" in line or line.startswith("error:"):
            return line[:300]
    return lines[-1][:300] if lines else "empty log"


# -- verdicts --------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    phase: Phase
    ok: bool
    text: str
    run: dict[str, Any] = field(default_factory=dict)  # exit code, seconds, limit, test counts

    @property
    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.phase.title}: {self.text}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.phase.name, "title": self.phase.title, "status": "pass" if self.ok else "fail",
                "line": self.line, **self.run}


@dataclass
class PhaseRun:
    rc: int | None  # None: not run (the budget was spent)
    seconds: int = 0
    limit: int = 0

    @property
    def timed_out(self) -> bool:
        return self.rc in TIMEOUT_CODES

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.rc, "seconds": self.seconds, "limit_s": self.limit}


def read_phases(path: Path) -> dict[str, PhaseRun]:
    runs: dict[str, PhaseRun] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return runs
    for row in text.splitlines():
        parts = row.split("\t")
        if len(parts) != 4:
            continue
        name, rc, seconds, limit = parts
        runs[name] = PhaseRun(None if rc == NOT_RUN else int(rc), int(seconds), int(limit))
    return runs


def judge_pytest(phase: Phase, run: PhaseRun, counts: JunitCounts | None, where: Path, gpu: str) -> Verdict:
    log = f"{phase.name}.log"
    facts = {**run.to_dict(), **(counts.to_dict() if counts else {})}

    def fail(text: str) -> Verdict:
        return Verdict(phase, False, text, facts)

    if run.timed_out:
        done = f"{counts.total} tests recorded" if counts else "pytest wrote no junit XML before it was stopped"
        return fail(f"stopped by its {run.limit} s limit ({done}): nothing in it counts as proven; see {log}")
    if counts is None:
        return fail(f"pytest wrote no junit XML (exit {run.rc}): {_last_words(where / log)}; see {log}")
    if counts.total == 0:
        return fail(f"selected no tests (exit {run.rc}), so nothing was proven: {_last_words(where / log)}")
    if not counts.passed and not counts.failed:
        return fail(f"all {counts.total} tests were skipped, so nothing was proven: {_listed(counts.skipped, 1)}")
    problems = []
    if counts.failed:
        problems.append(f"{len(counts.failed)} failed: {_listed(counts.failed)}")
    if counts.skipped:
        problems.append(f"{len(counts.skipped)} skipped under -m gpu, so not proven: {_listed(counts.skipped)}")
    if run.rc != 0 and not problems:
        problems.append(f"pytest exited {run.rc}: {_last_words(where / log)}")
    if problems:
        return fail(f"{counts.total} tests, {len(counts.passed)} passed; " + "; ".join(problems) + f"; see {log}")
    return Verdict(phase, True, f"{counts.total} tests ran, 0 skipped, 0 failed in {run.seconds} s on {gpu}: "
                                + "; ".join(proven(phase, counts.passed)), facts)


def judge_setup(run: PhaseRun, where: Path) -> Verdict:
    if run.rc != 0:
        return Verdict(SETUP, False, f"`source scripts/venv.sh` failed (exit {run.rc}): "
                                     f"{_last_words(where / 'setup.log')}; see setup.log", run.to_dict())
    return Verdict(SETUP, True, f"the project's virtual environment is set up (scripts/venv.sh, {run.seconds} s)",
                   run.to_dict())


def _finding(doctor: dict[str, Any], name: str) -> str:
    for item in doctor.get("findings", []):
        if item.get("name") == name:
            return str(item.get("value", ""))
    return ""


def judge_doctor(run: PhaseRun, doctor: dict[str, Any] | None, where: Path) -> Verdict:
    if doctor is None:
        return Verdict(DOCTOR, False, f"`{DOCTOR_COMMAND} --json` gave no JSON (exit {run.rc}): "
                                      f"{_last_words(where / 'doctor.log')}", run.to_dict())
    required = doctor.get("required", {})
    missing = [f"{name}: {entry.get('reason')}" for name, entry in required.items() if not entry.get("ready")]
    if run.rc != 0 or missing or set(required) != {"gpu", "tensorrt"}:
        why = "; ".join(missing) or f"exit {run.rc}: {_last_words(where / 'doctor.log')}"
        return Verdict(DOCTOR, False, f"`{DOCTOR_COMMAND}` says this host cannot run the GPU path: {why}",
                       run.to_dict())
    return Verdict(DOCTOR, True, f"`{DOCTOR_COMMAND}` exits 0: CUDA sees GPU {required['gpu'].get('reason')}, "
                                 f"driver {_finding(doctor, 'NVIDIA driver')}, CUDA runtime "
                                 f"{_finding(doctor, 'CUDA runtime')}; {required['tensorrt'].get('reason')}",
                   run.to_dict())


def _counts_text(counts: dict[str, Any]) -> str:
    return ", ".join(f"{p} {n}" for p, n in counts.items()) or "none"


def judge_inspector(run: PhaseRun, reading: dict[str, Any] | None) -> Verdict:
    facts = run.to_dict()
    if run.timed_out:
        return Verdict(INSPECTOR, False, f"stopped by its {run.limit} s limit; see inspector.log", facts)
    if reading is None:
        return Verdict(INSPECTOR, False, f"the dump script left no {READING_FILE} (exit {run.rc}); see inspector.log",
                       facts)
    files = ", ".join(reading.get("files", {}).values())
    if not reading.get("ok") or run.rc != 0:
        problems = "; ".join(reading.get("problems") or [f"exit {run.rc}"])
        kept = f"; the real JSON is kept in {files} for a later look" if files else ""
        return Verdict(INSPECTOR, False, f"{problems}{kept}; see inspector.log", facts)
    seen = reading["with_context"]
    without = reading.get("no_context", {})
    verdict = without.get("fp16_check", without.get("summary_error", "not read"))
    return Verdict(INSPECTOR, True, (
        f"the real IEngineInspector JSON of a small FP16 CNN (TensorRT {reading.get('tensorrt')}, batch "
        f"{reading.get('profile')}) is saved without and with an execution context ({files}); with the context "
        f"our reader took tensor types from {', '.join(map(repr, seen.get('type_keys', [])))} in "
        f"{seen.get('layers_with_tensor_types')} of {seen.get('layers')} layers and found the FP16 compute layers "
        f"({_counts_text(seen.get('summary', {}).get('compute_precisions', {}))}); without it our FP16 check "
        f"says: {verdict}"), facts)


def not_run(phase: Phase, why: str) -> Verdict:
    return Verdict(phase, False, f"not run: {why}", {"exit_code": None})


# -- the report --------------------------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def judge_all(where: Path, gpu: str) -> list[Verdict]:
    runs = read_phases(where / PHASES_FILE)
    verdicts = []
    stopped = ""
    for phase in PHASES:
        run = runs.get(phase.name)
        if run is None:
            verdicts.append(not_run(phase, stopped or "gpu_check.sh stopped before it"))
            continue
        if run.rc is None:
            verdicts.append(not_run(phase, f"the check's time budget was spent ({run.limit} s left)"))
        elif phase is SETUP:
            verdicts.append(judge_setup(run, where))
            if run.rc != 0:
                stopped = "the environment could not be set up"
        elif phase is DOCTOR:
            verdicts.append(judge_doctor(run, _load_json(where / DOCTOR_FILE), where))
        elif phase is INSPECTOR:
            verdicts.append(judge_inspector(run, _load_json(where / READING_FILE)))
        else:
            verdicts.append(judge_pytest(phase, run, read_junit(where / f"{phase.name}.xml"), where, gpu))
    return verdicts


FILES = (
    (REPORT_FILE, "this report"), (SUMMARY_FILE, "the same as JSON"),
    (NVIDIA_SMI_FILE, "nvidia-smi's GPU, driver and compute capability"), ("nvidia-smi.txt", "nvidia-smi's table"),
    (VERSIONS_FILE, "package versions"), (DOCTOR_FILE, f"`{DOCTOR_COMMAND} --json`"),
    ("doctor.log", "doctor's stderr"), ("setup.log", "scripts/venv.sh's output"),
    ("cuda-layer.log", "pytest output"), ("cuda-layer.xml", "junit XML"),
    ("inspector.log", "the dump script's output"),
    ("inspector-no-context.json", "the engine inspector's JSON, no execution context"),
    ("inspector-with-context.json", "the engine inspector's JSON, with an execution context"),
    (READING_FILE, "what our layer-precision reader makes of both"),
    ("engine-build.log", "pytest output"), ("engine-build.xml", "junit XML"),
)


def version_rows(versions: dict[str, str], gpus: list[dict[str, str]],
                 doctor: dict[str, Any] | None) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = [(k, versions[k]) for k in ("OS", "kernel", "Python") if k in versions]
    for i, gpu in enumerate(gpus):
        rows.append((f"GPU {i}", ", ".join(f"{k} {v}" for k, v in gpu.items())))
    if doctor:
        for name in ("GPU", "NVIDIA driver", "CUDA runtime", "TensorRT"):
            value = _finding(doctor, name)
            if value:
                rows.append((f"{name} (doctor)", value))
    rows += [(k, v) for k, v in versions.items() if k not in ("OS", "kernel", "Python")]
    return rows


def build_report(where: Path, no_gpu: str | None) -> tuple[int, str, dict[str, Any]]:
    gpus = read_gpus(where / NVIDIA_SMI_FILE)
    versions = _load_json(where / VERSIONS_FILE) or {}
    doctor = _load_json(where / DOCTOR_FILE)
    if no_gpu is not None:
        code, result = EXIT_NO_GPU, "NO GPU"
        lines = [f"NO GPU  no GPU: {no_gpu}; nothing GPU-specific was proven"]
        verdicts: list[Verdict] = []
        closing = (f"exit {code}: no GPU here; versions and `{DOCTOR_COMMAND} --json` were recorded, no phase ran "
                   "and nothing was installed. Run this on a host where nvidia-smi lists a GPU.")
    else:
        gpu = describe_gpu(gpus)
        verdicts = judge_all(where, gpu)
        lines = [v.line for v in verdicts]
        failed = [v.phase.title for v in verdicts if not v.ok]
        code = EXIT_FAIL if failed else EXIT_PASS
        result = "FAIL" if failed else "PASS"
        closing = (f"exit {code}: {len(failed)} of {len(verdicts)} phases failed ({', '.join(failed)})" if failed
                   else f"exit {code}: every phase passed on {gpu}")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = [f"# trtinfer GPU check: {result}", "",
          f"Host `{platform.node()}`, {now}; made by `bash scripts/gpu_check.sh` into `{where}`.", "",
          "```text", *lines, "```", "", closing, "", "## Versions", "", "| component | version |", "| --- | --- |"]
    md += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in version_rows(versions, gpus, doctor)]
    present = [(name, what) for name, what in FILES if (where / name).exists() or name in (REPORT_FILE, SUMMARY_FILE)]
    md += ["", "## Files", "", *[f"- `{name}`: {what}" for name, what in present], ""]
    summary = {"result": result.lower().replace(" ", "-"), "exit_code": code, "no_gpu_reason": no_gpu,
               "gpus": gpus, "lines": lines, "phases": [v.to_dict() for v in verdicts], "versions": versions,
               "written": now}
    return code, "\n".join(md), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    versions = sub.add_parser("versions", help="write DIR/versions.json")
    versions.add_argument("dir", type=Path)
    report = sub.add_parser("report", help="write DIR/report.md and DIR/summary.json; exit 0, 1 or 2")
    report.add_argument("dir", type=Path)
    report.add_argument("--no-gpu", metavar="REASON", help="no GPU here, and why: no phase was run")
    args = parser.parse_args(argv)
    where: Path = args.dir
    if args.command == "versions":
        (where / VERSIONS_FILE).write_text(json.dumps(collect_versions(), indent=2) + "\n", encoding="utf-8")
        return 0
    code, md, summary = build_report(where, args.no_gpu)
    (where / REPORT_FILE).write_text(md, encoding="utf-8")
    (where / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(md)
    return code


if __name__ == "__main__":
    sys.exit(main())
