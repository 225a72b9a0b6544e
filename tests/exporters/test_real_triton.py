"""``trtinfer export triton`` against a real Triton Inference Server (tests/exporters/triton_server.py: the
``tritonserver`` 2.51 of the registry's nvidia-pytriton wheel, Python backend only, installed by
scripts/triton_server.sh), one server per module with explicit model control.

* Repositories exported from real FP32, FP16 and INT8 artifacts (and, for ``--kind gpu``, a plan-bearing
  stand-in with two profiles), for ``--kind cpu``, ``--kind cpu --cpu-backend python`` and ``--kind gpu``,
  with and without ``--with-preprocess``: every model is loaded through the repository API. Python-backend
  models must be READY; every other model must fail only with "unable to find backend library" for the
  backend it needs (Triton parses and validates the config before it looks for the backend: an invalid
  config fails with another message, which ``test_a_broken_config_fails_the_check`` holds the check to);
  an ensemble must be READY when all its steps run on the Python backend, else fail only on its missing
  backends.
* The Python-backend classifier's image ensemble (``--cpu-backend python``, ONNX Runtime from this venv's
  site-packages through ``--python-path``) serves real CIFAR JPEG and PNG bytes over HTTP and gRPC with
  top-1 equal to ``trtinfer serve``'s on the same images, and examples/triton_image_client.py runs
  unchanged against both servers.

Skipped, naming what is missing, where the server cannot be installed (not root, no registry)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from fakes.tensorrt import make_plan_artifact
from trtinfer.cli import main
from trtinfer.manifest import BatchProfile, Manifest

from .conftest import wrap_onnx
from .triton_server import NO_BACKEND, TritonServer, triton_fixture

pytest.importorskip("tritonclient.http")
pytest_plugins = ["conftest_trained"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "triton_image_client.py"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]  # ONNX Runtime for the Python-backend classifier
PREPROCESS, IMAGE = "_preprocess", "_image"


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    yield from triton_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def onnx_files(trained_model, fp16_model, int8_model) -> dict[str, Path]:
    return {"fp32": trained_model.onnx_path, "fp16": fp16_model.path, "int8": int8_model.path}


def artifact(onnx_files, trained_model, root: Path, name: str, precision: str, target: str) -> Path:
    """The session's real ``precision`` model as an artifact named ``name`` built for ``target`` nodes (names
    are unique in the one repository the server watches)."""
    directory = wrap_onnx(onnx_files[precision], root / name, name, precision, trained_model)
    return retarget(directory, name, target)


def retarget(directory: Path, name: str, target: str) -> Path:
    manifest = Manifest.read(directory)
    manifest.name, manifest.target = name, target
    manifest.write(directory)
    return directory


def backends_needed(name: str, classifiers: dict[str, str]) -> set[str]:
    """The backends ``name`` runs on, from what the test asked for (``classifiers``: classifier -> backend)."""
    if name.endswith(IMAGE):
        stem = name.removesuffix(IMAGE)
        return backends_needed(stem + PREPROCESS, classifiers) | backends_needed(stem, classifiers)
    return {"python"} if name.endswith(PREPROCESS) else {classifiers[name]}


def check_loads(server: TritonServer, names: list[str], classifiers: dict[str, str]) -> list[str]:
    """Every model loaded through the repository API (ensembles after the models they step through, a few
    requests at a time), then all unloaded. A model on the Python backend alone must be READY; any other
    must fail only with "unable to find backend library" for a backend it needs (so Triton parsed and
    validated its config). The mismatches, with Triton's words."""
    from concurrent.futures import ThreadPoolExecutor

    errors: dict[str, str | None] = {}
    with ThreadPoolExecutor(4) as pool:
        for ensembles in (False, True):
            wave = [n for n in names if n.endswith(IMAGE) == ensembles]
            errors.update(zip(wave, pool.map(server.load, wave)))
    for name in names:
        server.unload(name)
    problems = []
    for name in names:
        absent, error = backends_needed(name, classifiers) - {"python"}, errors[name]
        if not absent and error is not None:
            problems.append(f"{name}: expected READY, got: {error}")
        elif absent and error is None:
            problems.append(f"{name}: READY, but Triton here has no {', '.join(sorted(absent))} backend")
        elif absent and error is not None and not any(f"{NO_BACKEND} for backend '{b}'" in error for b in absent):
            problems.append(f"{name}: expected only '{NO_BACKEND}' ({', '.join(sorted(absent))}), got: {error}")
    return problems


def export(artifacts: list[Path], repo: Path, *flags: str, capsys) -> list[str]:
    """The export's model names (from its report lines)."""
    code = main(["export", "triton", *map(str, artifacts), "--repo", str(repo), *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [Path(line.split(":")[0]).name for line in out.splitlines() if line.startswith(str(repo))]


#: (test id, --kind, extra flags, the classifiers' backend, --with-preprocess). GPU nodes are loaded with the
#: preprocessing only: its classifier configs are the ones written without it (one suite-minute budget).
CASES = [
    ("cpu", "cpu", (), "onnxruntime", False),
    ("cpu-preprocess", "cpu", (), "onnxruntime", True),
    ("gpu-preprocess", "gpu", (), "onnxruntime", True),
    ("cpu-python-preprocess", "cpu", ("--cpu-backend", "python", "--python-path", SITE_PACKAGES), "python", True),
]


@pytest.mark.parametrize("case, kind, flags, backend, with_preprocess", CASES, ids=[c[0] for c in CASES])
def test_every_exported_model_loads_or_lacks_only_its_backend(case, kind, flags, backend, with_preprocess, triton,
                                                               onnx_files, trained_model, tmp_path, capsys):
    made = [artifact(onnx_files, trained_model, tmp_path, f"{case}-{p}", p, kind) for p in onnx_files]
    classifiers = {f"{case}-{p}": backend for p in onnx_files}
    if kind == "gpu":  # a plan-bearing stand-in (placeholder plan bytes) with two profiles: its config is real
        plan = make_plan_artifact(made[1], tmp_path / "plan", [BatchProfile(1, 8, 16), BatchProfile(17, 32, 64)])
        made.append(retarget(plan, f"{case}-plan", "gpu"))
        classifiers[f"{case}-plan"] = "tensorrt"
    preprocess = ["--with-preprocess", "--preprocess-instances", "1"] if with_preprocess else []  # one stub each
    names = export(made, triton.repository, "--kind", kind, *flags, *preprocess, capsys=capsys)
    stems = [n for n in names if not n.endswith((PREPROCESS, IMAGE))]
    assert sorted(stems) == sorted(classifiers)
    assert len(names) == len(stems) * (3 if with_preprocess else 1), names
    problems = check_loads(triton, names, classifiers)
    assert not problems, "\n".join(problems) + "\n" + triton.log_tail()


def test_a_broken_config_fails_the_check(triton, onnx_files, trained_model, tmp_path, capsys):
    """The check above fails on configs Triton refuses: a preferred batch above max_batch_size (the repository
    API says "failed to poll from model repository", the log says why), a misspelt backend on the
    preprocessing model (which must be READY), and the ensemble over both."""
    made = artifact(onnx_files, trained_model, tmp_path, "broken-fp32", "fp32", "cpu")
    names = export([made], triton.repository, "--kind", "cpu", "--with-preprocess", capsys=capsys)
    config = triton.repository / "broken-fp32" / "config.pbtxt"
    config.write_text(config.read_text().replace("preferred_batch_size: 32", "preferred_batch_size: 64"))
    preprocess = triton.repository / "broken-fp32_preprocess" / "config.pbtxt"
    preprocess.write_text(preprocess.read_text().replace('backend: "python"', 'backend: "pyhton"'))
    problems = dict(p.split(": ", 1) for p in check_loads(triton, names, {"broken-fp32": "onnxruntime"}))
    assert sorted(problems) == sorted(names), problems
    assert "failed to poll from model repository" in problems["broken-fp32"]
    assert "dynamic batching preferred size must be <= max batch size" in triton.log.read_text()
    assert problems["broken-fp32_preprocess"].startswith("expected READY")
    assert "unable to find backend library for backend 'pyhton'" in problems["broken-fp32_preprocess"]
    assert "not available" in problems["broken-fp32_image"]


# -- the Python-backend classifier's image ensemble, served -------------------------------------------------

IMAGES = 16  # CIFAR test rows, sent as JPEG (even rows) and PNG (odd rows)


@pytest.fixture(scope="module")
def image_files(cifar_dir, tmp_path_factory) -> list[Path]:
    from PIL import Image

    from trtinfer.calibration.cifar import load_cifar

    folder = tmp_path_factory.mktemp("cifar-images")
    files = []
    for i, row in enumerate(load_cifar(cifar_dir, "test").images[:IMAGES]):
        files.append(folder / f"cifar-{i}.{'png' if i % 2 else 'jpg'}")
        Image.fromarray(row).save(files[-1])
    return files


@pytest.fixture(scope="module")
def python_classifier(triton, onnx_files, trained_model, tmp_path_factory) -> Path:
    """The FP32 artifact exported for CPU nodes on the Python backend (ONNX Runtime from this venv's
    site-packages), with preprocessing; its ``_image`` ensemble loaded READY."""
    made = artifact(onnx_files, trained_model, tmp_path_factory.mktemp("python-backend"), "pyclf-fp32", "fp32",
                    "cpu")
    code = main(["export", "triton", str(made), "--repo", str(triton.repository), "--kind", "cpu",
                 "--cpu-backend", "python", "--with-preprocess", "--python-path", SITE_PACKAGES])
    assert code == 0
    error = triton.load("pyclf-fp32_image")
    assert error is None, f"{error}\n{triton.log_tail()}"
    yield made
    triton.unload("pyclf-fp32_image")


@pytest.fixture(scope="module")
def trtinfer_serve(python_classifier, tmp_path_factory):
    from trtinfer.benchmarks.serve_process import start_server

    server = start_server([python_classifier], tmp_path_factory.mktemp("serve"))
    yield server
    assert server.stop() == 0, server.log.read_text()


def infer_images(module, url: str, model: str, files: list[Path]) -> np.ndarray:
    """One BYTES batch of the encoded files to ``<model>_image`` through tritonclient (``module``:
    tritonclient.http or tritonclient.grpc); the logits."""
    client = module.InferenceServerClient(url)
    try:
        name = model + "_image"
        metadata = client.get_model_metadata(name)
        output = (metadata["outputs"] if isinstance(metadata, dict) else metadata.outputs)[0]
        output = output["name"] if isinstance(output, dict) else output.name
        batch = np.array([[path.read_bytes()] for path in files], dtype=np.object_)
        tensor = module.InferInput("image", list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch)
        return client.infer(name, [tensor], outputs=[module.InferRequestedOutput(output)]).as_numpy(output)
    finally:
        client.close()


def test_python_backend_ensemble_answers_as_trtinfer_serve(triton, python_classifier, trtinfer_serve, image_files):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    expected = infer_images(httpclient, trtinfer_serve.url.removeprefix("http://"), "pyclf-fp32", image_files)
    assert expected.shape == (IMAGES, Manifest.read(python_classifier).num_classes)
    for module, url in ((httpclient, triton.url), (grpcclient, triton.grpc_url)):
        logits = infer_images(module, url, "pyclf-fp32", image_files)
        assert logits.shape == expected.shape, module.__name__
        assert (logits.argmax(1) == expected.argmax(1)).all(), (module.__name__, logits.argmax(1), expected.argmax(1))
        np.testing.assert_allclose(logits, expected, atol=1e-2, err_msg=module.__name__)


def test_the_example_client_runs_unchanged_against_both_servers(triton, python_classifier, trtinfer_serve,
                                                                image_files):
    outputs = []
    for url in (triton.url, trtinfer_serve.url.removeprefix("http://")):
        result = subprocess.run([sys.executable, str(EXAMPLE), "--url", url, "--model", "pyclf-fp32",
                                 *map(str, image_files)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outputs.append([line.partition(": ") for line in result.stdout.splitlines()])
    on_triton, on_serve = outputs
    assert [path for path, _, _ in on_triton] == list(map(str, image_files))
    for (path, _, triton_top), (_, _, serve_top) in zip(on_triton, on_serve):
        labels = [[entry.rsplit(" (", 1)[0] for entry in top.split(", ")] for top in (triton_top, serve_top)]
        assert labels[0][0] == labels[1][0], (path, triton_top, serve_top)


def test_a_bad_image_is_a_client_error_in_the_real_server(triton, python_classifier, tmp_path):
    """The preprocessing model's INVALID_ARG reaches the client as HTTP 400 (was INTERNAL: a 500 clients retry)."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"GIF89a not accepted")
    with pytest.raises(InferenceServerException) as caught:
        infer_images(httpclient, triton.url, "pyclf-fp32", [bad])
    assert caught.value.status() == "400" and "not a complete JPEG, PNG or WebP image" in caught.value.message()
