"""``trtinfer bench``: our runtime against eager PyTorch and the peers, on the same weights and images.

The order of work, and why:

1. the checkpoint is loaded the way ``trtinfer build`` loads it, giving the eager FP32 reference;
2. artifacts are the ones given, checked to come from that checkpoint, or built and cached, and the
   cases are planned from them (:mod:`.plan`);
3. every case is opened and checked against eager FP32 **before** it is timed (correctness
   before speed, :mod:`.correctness`): a case computing something else is reported as failed and
   never timed; with ``--eval-data`` every case's top-1 on the same labelled images comes with its speed;
4. cases are timed per batch size in interleaved rounds, then the server scenario runs N clients
   through the runtime's dynamic batcher (:mod:`.timing`);
5. the summary and headline figures come from the rows (:mod:`.report`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtinfer.cpu_info import usable_cores
from trtinfer.errors import TrtInferError
from trtinfer.manifest import Manifest

from . import cases as C
from . import report
from .correctness import Reference, check_case, eager_reference
from .environment import collect_environment
from .measure import resident_mb
from .options import BenchSettings
from .plan import CHECK_ROWS, Inputs, case_ids, check_same_input, find_artifacts, make_inputs, plan_cases, skipped_precision
from .results import BenchResults, CaseResult
from .timing import case_record, time_batches, time_server

log = logging.getLogger(__name__)


@dataclass
class Checked:
    """The cases that passed their check against eager FP32, by id, with their check and RSS growth."""

    live: dict[str, C.Case] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    rss: dict[str, float | None] = field(default_factory=dict)


class Bench:
    """One benchmark run; :meth:`run` returns the results."""

    def __init__(self, settings: BenchSettings, say: Callable[[str], None] | None = None,
                 reporter: Any = None) -> None:
        settings.check()
        self.s = settings
        self.say: Callable[[str], None] = say or (lambda message: None)
        self.reporter = reporter
        self.threads = settings.threads or usable_cores()
        self.records: list[CaseResult] = []
        self.notes: list[str] = []

    def _load_reference(self) -> tuple[Any, Any]:
        from trtinfer.builders.source.archs import build_model, match_arch
        from trtinfer.builders.source.checkpoint import load_checkpoint

        b = self.s.build
        ckpt = load_checkpoint(self.s.checkpoint, trust=bool(b.get("trust_checkpoint")))
        match = match_arch(ckpt.state_dict, b.get("arch"), hf_config=ckpt.hf_config)
        model = ckpt.module if ckpt.module is not None else build_model(match, ckpt.state_dict)
        return ckpt, model.eval()

    def run(self) -> BenchResults:
        s = self.s
        started = time.perf_counter()
        env = collect_environment(self.threads)
        for w in env["warnings"]:
            self.say(f"warning: {w}")
        self.say(f"loading {s.checkpoint}")
        ckpt, model = self._load_reference()
        artifacts = find_artifacts(s, ckpt.sha256, self.notes, self.say, self.reporter)
        for precision, reason in artifacts.failed.items():
            self.records += skipped_precision(s, precision, reason)
        if not artifacts.found and not self.records:
            raise TrtInferError("no artifact to benchmark", hint="pass --precisions or artifact directories")
        if not artifacts.found:
            raise TrtInferError("every artifact build failed: " + "; ".join(r.reason for r in self.records[:1]),
                                hint="see the build errors above; `trtinfer build` with the same options shows them")
        check_same_input(artifacts.found)
        manifest = next(iter(artifacts.found.values()))[1]
        inputs = make_inputs(s, manifest, self.notes, self.say)
        self._time(model, artifacts.found, inputs)
        report.add_speedups(self.records)
        summary = report.summary(self.records, s)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        summary["artifact_build_seconds"] = artifacts.build_seconds
        summary["notes"] = self.notes
        settings = report.settings_record(s, self.threads, artifacts.found, inputs.check_source)
        return BenchResults(environment=env, settings=settings, cases=self.records, summary=summary)

    def _time(self, model: Any, artifacts: dict[str, tuple[Path, Manifest]], inputs: Inputs) -> None:
        """Eager FP32's reference outputs, then every planned case opened, checked and timed; the cases and
        eager closed at the end whatever happens."""
        import torch

        torch.set_num_threads(self.threads)
        eager = C.TorchCase("torch-eager", lambda: model, self.threads)
        eager.open()
        check_batch = min(max(self.s.batch_sizes), CHECK_ROWS)
        reference = eager_reference(eager, inputs, check_batch, self.say)
        cases = plan_cases(self.s, self.threads, model, artifacts, inputs)
        try:
            checked = self._open_and_check(cases, reference, inputs, check_batch)
            self.records += time_batches(self.s, checked.live, checked.checks, checked.rss, inputs, self.say)
            if "server" in self.s.scenarios:
                self.records += time_server(self.s, checked.live, checked.checks, inputs, self.notes, self.say)
        finally:
            for case in cases:
                case.close()
            eager.close()

    def _open_and_check(self, cases: list[C.Case], reference: Reference, inputs: Inputs, batch: int) -> Checked:
        """Open each case and check it against eager FP32; one that cannot open, runs outside ``--device``
        or computes something else is a row, closed at once, and never timed."""
        checked = Checked()
        for cid, case in zip(case_ids(cases), cases):
            self.say(f"opening {case.info.label}")
            before = resident_mb()
            failure = self._open(case)
            if failure is not None:
                self.records.append(failure)
                case.close()
                continue
            try:
                check = check_case(case, reference, inputs, batch, self.s.build)
            except Exception as exc:
                check = {"passed": False, "why": f"{type(exc).__name__}: {exc}"}
            after = resident_mb()
            checked.rss[cid] = None if before is None or after is None else round(after - before, 1)
            checked.checks[cid] = check
            if not check["passed"]:
                self.records.append(case_record(case, None, status="failed", check=check,
                                                reason=f"computes something else: {check['why']}"))
                self.say(f"FAILED {case.info.label}: {check['why']}")
                case.close()
                continue
            checked.live[cid] = case
        return checked

    def _open(self, case: C.Case) -> CaseResult | None:
        """Open ``case``; the row saying why where it cannot run here (None when it is open)."""
        try:
            case.open()
        except C.Skip as exc:
            return case_record(case, None, status="skipped", reason=str(exc))
        except Exception as exc:  # a peer library failing is a row, not a crash
            return case_record(case, None, status="failed", reason=f"could not open: {type(exc).__name__}: {exc}")
        if not self.s.wants_device(case.info.device):  # `auto` chose a device outside --device
            return case_record(case, None, status="skipped",
                               reason=f"load() chose {case.info.options.get('chosen')} on the "
                                      f"{case.info.device}, outside --device {self.s.device}")
        return None
