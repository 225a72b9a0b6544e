"""``trtinfer export triton``: artifacts -> a Triton Inference Server model repository.

Per artifact (or per group of plan-bearing artifacts of one model built on different GPU kinds):

    REPO/<name>/config.pbtxt, labels.txt, 1/model.plan | 1/model.onnx | 1/model.xml + model.bin
                                          | 1/model.py + model.onnx               (--cpu-backend python)
    REPO/<name>_preprocess/config.pbtxt, 1/model.py, 1/trtinfer_pixels.py      (--with-preprocess)
    REPO/<name>_image/config.pbtxt, labels.txt, 1/placeholder.txt              (--with-preprocess)

Every source file is checked against its manifest's sha256 before it is used and every copy after
it is written; every folder is staged beside its final place and all of them are renamed in
together (:class:`trtinfer.atomic.StagedDirectories`), so an error or Ctrl-C leaves the repository
as it was, and models of the repository that this export does not name are never touched.

The export writes and removes only inside the repository: a model folder that is a symbolic link is
refused (replacing it would replace its target, or write beside a dangling link's), and what an export
killed mid-commit left is put right from its journal only where the journal names exactly this
repository's own staging and set-aside folders (:func:`trtinfer.atomic.recover_killed_commits`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtinfer.atomic import StagedDirectories, recover_killed_commits
from trtinfer.errors import ArtifactError, TrtInferError
from trtinfer.hashing import sha256_file
from trtinfer.manifest import ONNX_NAME, Manifest

from . import triton_config as tc
from .triton_config import TritonOptions

PREPROCESS_MODEL = Path(__file__).with_name("triton_preprocess") / "model.py"
CLASSIFIER_MODEL = Path(__file__).with_name("triton_classifier") / "model.py"


@dataclass
class Source:
    """One artifact handed to the export: its directory and checked manifest."""

    directory: Path
    manifest: Manifest


@dataclass
class ExportedModel:
    """One model folder the export writes (or wrote)."""

    name: str
    kind: str  # "cpu" | "gpu"
    platform: str  # tensorrt_plan, onnxruntime_onnx, openvino, python, ensemble
    sources: list[Source]
    role: str = "classifier"  # "classifier" | "preprocess" | "ensemble"
    config: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # relative to the model folder


def _pixels_source() -> Path:
    """trtinfer/pixels.py as installed (the package's own file, which the Triton model ships verbatim)."""
    from trtinfer import pixels

    return Path(pixels.__file__)


def read_sources(artifacts: Sequence[str | Path]) -> list[Source]:
    """Every artifact's manifest read and every file it lists checked against its sha256."""
    sources = []
    for artifact in artifacts:
        directory = Path(artifact)
        manifest = Manifest.read(directory)
        manifest.verify_files(directory)
        tc.check_model_name(manifest.name)
        _check_labels(manifest)
        sources.append(Source(directory, manifest))
    return sources


def _group(sources: list[Source]) -> dict[str, list[Source]]:
    groups: dict[str, list[Source]] = {}
    for source in sources:
        groups.setdefault(source.manifest.name, []).append(source)
    return groups


def _check_plan_group(name: str, group: list[Source]) -> None:
    """Several artifacts under one name: one model's plans for different GPU kinds, one TensorRT."""
    where = ", ".join(str(s.directory) for s in group)
    if any(s.manifest.engine is None for s in group):
        raise TrtInferError(f"{len(group)} artifacts are named {name!r} ({where}); only plan-bearing artifacts of "
                            "one model built on different GPU kinds share a name in the repository",
                            hint="export them to different repositories, or rebuild one with another --name")
    onnx = {s.manifest.files[ONNX_NAME].sha256 for s in group}
    if len(onnx) > 1:
        raise TrtInferError(f"the artifacts named {name!r} ({where}) hold different models (their model.onnx differ)",
                            hint="rebuild one with another --name")
    ccs = [s.manifest.engine.compute_capability for s in group if s.manifest.engine is not None]
    if len(set(ccs)) < len(ccs):
        raise TrtInferError(f"the artifacts named {name!r} ({where}) hold two plans for compute capability "
                            f"{max(ccs, key=ccs.count)}", hint="pass one artifact per GPU kind")
    versions = sorted({s.manifest.engine.tensorrt_version for s in group if s.manifest.engine is not None})
    if len(versions) > 1:
        raise TrtInferError(f"the plans named {name!r} were built with TensorRT {' and '.join(versions)}; one Triton "
                            "container runs one TensorRT version", hint="rebuild them with one TensorRT version")


def plan_file_name(compute_capability: str) -> str:
    """``8.9`` -> ``model_sm89.plan``."""
    return f"model_sm{compute_capability.replace('.', '')}.plan"


def plan_models(sources: list[Source], options: TritonOptions) -> list[ExportedModel]:
    """What the export will write, decided before any file is touched (errors come first)."""
    models: list[ExportedModel] = []
    for name, group in _group(sources).items():
        if len(group) > 1:
            _check_plan_group(name, group)
        kind, platform = tc.choose_format(group[0].manifest, options)
        if len(group) > 1 and platform != tc.PLAN:
            raise TrtInferError(f"{len(group)} artifacts named {name!r} go to {kind} nodes as {platform}, which "
                                "takes one model file", hint="export one of them, or --kind gpu for their plans")
        manifests = [s.manifest for s in group]
        plan_files = {m.engine.compute_capability: plan_file_name(m.engine.compute_capability)
                      for m in manifests if m.engine is not None} if len(group) > 1 else None
        config = tc.classifier_config(name, manifests, kind, platform, options, plan_files)
        models.append(ExportedModel(name, kind, platform, group, config=config))
        if options.with_preprocess:
            max_batch = config["max_batch_size"]
            models.append(ExportedModel(name + tc.PREPROCESS_SUFFIX, "cpu", tc.PYTHON, group[:1], role="preprocess",
                                        config=tc.preprocess_config(name, group[0].manifest, max_batch, options)))
            models.append(ExportedModel(name + tc.IMAGE_SUFFIX, kind, "ensemble", group[:1], role="ensemble",
                                        config=tc.ensemble_config(name, group[0].manifest, max_batch)))
    names = [m.name for m in models]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise TrtInferError(f"two models of this export would both be named {clashes[0]!r}",
                            hint="rebuild one artifact with another --name")
    return models


def _copy_verified(src: Path, dst: Path, sha256: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    if sha256_file(dst) != sha256:
        raise ArtifactError(f"the copy {dst} of {src} does not match the manifest's sha256 (a disk or copy error)",
                            hint="run the export again")


def _write_openvino_ir(onnx: Path, xml: Path) -> None:
    """Our ONNX -> OpenVINO IR with OpenVINO's own converter; weights kept as they are (the default
    ``compress_to_fp16`` would turn an FP32 or INT8 model's float weights into FP16)."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise TrtInferError(f"--cpu-backend openvino runs models on Triton's OpenVINO backend, and converting to its "
                            f"IR needs OpenVINO ({exc})", hint='pip install "trtinfer[triton]"') from exc
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx)), str(xml), compress_to_fp16=False)


def _check_labels(manifest: Manifest) -> None:
    bad = [label for label in manifest.labels if "\n" in label or "\r" in label]
    if bad:
        raise TrtInferError(f"{manifest.name}'s label {bad[0]!r} holds a line break; Triton's labels file has one "
                            "label per line", hint="rebuild the artifact with single-line --labels")


def _write_labels(folder: Path, manifest: Manifest) -> None:
    (folder / tc.LABELS_FILE).write_text("".join(f"{label}\n" for label in manifest.labels), encoding="utf-8")


def _write_model(model: ExportedModel, folder: Path, options: TritonOptions) -> None:
    version = folder / tc.VERSION
    version.mkdir(parents=True, exist_ok=True)
    first = model.sources[0]
    if model.platform == tc.PLAN:
        plan_files = model.config.get("cc_model_filenames") or {}
        for source in model.sources:
            m, engine = source.manifest, source.manifest.engine
            assert engine is not None
            target = plan_files.get(engine.compute_capability, "model.plan")
            _copy_verified(m.file_path(source.directory, engine.plan), version / target, m.files[engine.plan].sha256)
    elif model.platform == tc.ONNX or (model.platform == tc.PYTHON and model.role == "classifier"):
        m = first.manifest
        _copy_verified(m.file_path(first.directory, ONNX_NAME), version / ONNX_NAME, m.files[ONNX_NAME].sha256)
        if model.platform == tc.PYTHON:  # runs that ONNX with ONNX Runtime's or OpenVINO's Python API
            shutil.copyfile(CLASSIFIER_MODEL, version / "model.py")
    elif model.platform == tc.OPENVINO:
        _write_openvino_ir(first.manifest.file_path(first.directory, ONNX_NAME), version / "model.xml")
    elif model.role == "preprocess":
        shutil.copyfile(PREPROCESS_MODEL, version / "model.py")
        shutil.copyfile(_pixels_source(), version / "trtinfer_pixels.py")
        if options.python_env:
            shutil.copyfile(options.python_env, folder / tc.python_env_name(options))
    elif model.role == "ensemble":  # no model file; an empty folder is dropped by S3/GCS syncs
        (version / tc.ENSEMBLE_PLACEHOLDER).write_text(
            "Placeholder: an ensemble has no model file, and object-store syncs drop empty folders, after which "
            "Triton refuses the ensemble (no version available). Written by trtinfer export triton.\n",
            encoding="utf-8")
    if model.role != "preprocess":
        _write_labels(folder, first.manifest)
    (folder / "config.pbtxt").write_text(tc.to_pbtxt(model.config), encoding="utf-8")
    model.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def check_no_links(repo: Path, names: Sequence[str]) -> None:
    """Refuse a model folder that is a symbolic link: replacing it would replace what it points at (or, for a
    dangling link, write beside its target), outside the repository."""
    for name in names:
        folder = repo / name
        if folder.is_symlink():
            raise ArtifactError(f"{folder} is a symbolic link (to {os.readlink(folder)!r}); the export replaces model "
                                "folders and never writes or removes through a link",
                                hint=f"remove the link (rm {folder}) or choose another --repo")


def export_triton(artifacts: Sequence[str | Path], repo: str | Path, options: TritonOptions,
                  report: Callable[[str], None] | None = None) -> list[ExportedModel]:
    """Write the artifacts' models into the repository ``repo``; returns what was written."""
    from trtinfer.builders.destination import check_destination

    repo = Path(repo)
    say = report or (lambda message: None)
    if not artifacts:
        raise TrtInferError("no artifact given", hint="trtinfer export triton ARTIFACT [ARTIFACT ...] --repo DIR")
    models = plan_models(read_sources(artifacts), options)
    check_destination(repo, [m.name for m in models], options.force, flag="--repo",
                      layout="each model goes to REPO/<name>/")
    recover_killed_commits(repo, say, "an export", "Export those models together again (--force) so that they "
                                                   "come from one export")
    check_no_links(repo, [m.name for m in models])
    with StagedDirectories(overwrite=options.force) as staging:
        for model in models:
            say(f"writing {model.name} ({model.platform}, {model.kind.upper()} nodes)")
            _write_model(model, staging.stage(repo / model.name), options)
        staging.commit()
    return models
