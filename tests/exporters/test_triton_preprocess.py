"""The exported preprocessing model (``<name>_preprocess``, Triton's Python backend) computes exactly the
tensor the runtime computes (``trtinfer.preprocess``) on real CIFAR images, in every image mode, at the
native size and upsampled; a bad image fails only its own request; and it runs without trtinfer.

Triton's ``triton_python_backend_utils`` is replaced by a labelled stand-in (tests/fakes/triton_pb_utils.py);
the model file, its ``trtinfer_pixels.py`` and its ``config.pbtxt`` are the ones the export wrote, and the
model is initialised with that config as Triton passes it (the ModelConfig as JSON)."""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fakes import triton_pb_utils as pb
from trtinfer.exporters.triton_config import TritonOptions, parse_pbtxt
from trtinfer.exporters.triton_repo import export_triton
from trtinfer.manifest import Manifest
from trtinfer.preprocess import decode_image_bytes, make_spec, preprocess

pytest.importorskip("tritonclient.grpc")
pytest_plugins = ["conftest_trained"]
FAKES = Path(__file__).resolve().parents[1] / "fakes"


def encode(image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="module")
def blobs(cifar_dir) -> list[bytes]:
    """Real CIFAR test rows as PNG, JPEG and WebP, and in the modes uploads come in (L, RGBA, P, CMYK
    JPEG, 16-bit grayscale PNG)."""
    from PIL import Image

    from trtinfer.calibration.cifar import load_cifar

    rows = load_cifar(cifar_dir, "test").images[:12]
    rgb = [Image.fromarray(row) for row in rows]
    out = [encode(rgb[i], "PNG") for i in range(4)] + [encode(rgb[i], "JPEG", quality=90) for i in range(4, 7)]
    out.append(encode(rgb[7], "WEBP", quality=90))
    out.append(encode(rgb[8].convert("L"), "PNG"))
    out.append(encode(rgb[9].convert("RGBA"), "PNG"))
    out.append(encode(rgb[10].convert("P"), "PNG"))
    out.append(encode(rgb[11].convert("CMYK"), "JPEG"))
    gray16 = (np.asarray(rgb[0].convert("L"), np.uint16) * 257).astype(np.uint16)
    out.append(encode(Image.fromarray(gray16), "PNG"))
    return out


def upsampled(artifact: Path, tmp_path: Path) -> Path:
    """The artifact with ImageNet-style preprocessing (resize 256, bicubic, centre crop 224): the path where
    resizing happens."""
    copy = tmp_path / "upsampled"
    shutil.copytree(artifact, copy)
    manifest = Manifest.read(copy)
    manifest.name = "resnet-224"
    manifest.preprocess = make_spec(224, "imagenet", resize=256)
    manifest.preprocess.interpolation = "bicubic"
    manifest.input.shape = [-1, 3, 224, 224]
    manifest.write(copy)
    return copy


def load_model(folder: Path):
    """The exported ``model.py`` as Triton's stub would, initialised with its own config.pbtxt."""
    from google.protobuf import json_format

    pb.install()
    spec = importlib.util.spec_from_file_location(f"model_{folder.name.replace('-', '_')}", folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    # Triton hands the model its ModelConfig as JSON with the proto field names (data_type, string_value)
    model.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
                      "model_version": "1",
                      "model_repository": str(folder), "model_name": folder.name})
    return model


@pytest.fixture(scope="module")
def repo(artifacts, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("preprocess-repo")
    repo = tmp / "repo"
    export_triton([artifacts["fp32"], upsampled(artifacts["fp32"], tmp)], repo, TritonOptions(with_preprocess=True))
    return repo


@pytest.mark.parametrize("name", ["resnet-fp32", "resnet-224"])
def test_the_preprocessing_model_equals_the_runtime(repo, artifacts, blobs, name):
    model = load_model(repo / f"{name}_preprocess")
    spec = Manifest.read(repo.parent / "upsampled" if name == "resnet-224" else artifacts["fp32"]).preprocess
    requests = [pb.InferenceRequest(image=pb.bytes_tensor(blobs[:5])), pb.InferenceRequest(image=pb.bytes_tensor(blobs[5:]))]
    responses = model.execute(requests)
    assert len(responses) == 2 and not any(r.has_error() for r in responses)
    got = np.concatenate([pb.response_array(r) for r in responses])
    images = [decode_image_bytes(b) for b in blobs]
    expected = preprocess(images, spec)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(blobs), 3, spec.input_size, spec.input_size)
    np.testing.assert_array_equal(got, expected)


def test_a_bad_image_fails_only_its_own_request(repo, artifacts, blobs):
    model = load_model(repo / "resnet-fp32_preprocess")
    truncated = blobs[0][: len(blobs[0]) // 2]
    responses = model.execute([pb.InferenceRequest(image=pb.bytes_tensor([blobs[1]])),
                               pb.InferenceRequest(image=pb.bytes_tensor([blobs[2], truncated])),
                               pb.InferenceRequest(image=pb.bytes_tensor([b"GIF89a not accepted"])),
                               pb.InferenceRequest(image=pb.bytes_tensor([blobs[3]]))])
    assert [r.has_error() for r in responses] == [False, True, True, False]
    assert "truncated or corrupt" in responses[1].error().message()
    assert "not a complete JPEG, PNG or WebP image" in responses[2].error().message()
    np.testing.assert_array_equal(pb.response_array(responses[3]),
                                  preprocess([decode_image_bytes(blobs[3])], Manifest.read(artifacts["fp32"]).preprocess))


def test_the_model_ships_the_runtimes_own_pixels_and_imports_no_trtinfer(repo):
    from trtinfer import pixels

    version = repo / "resnet-fp32_preprocess" / "1"
    assert (version / "trtinfer_pixels.py").read_bytes() == Path(pixels.__file__).read_bytes()
    for source in ("model.py", "trtinfer_pixels.py"):
        tree = ast.parse((version / source).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        assert imported <= {"__future__", "importlib", "io", "json", "re", "sys", "pathlib", "collections",
                            "typing", "numpy", "PIL", "triton_python_backend_utils"}, (source, imported)


RUN_WITHOUT_TRTINFER = """
import importlib.abc, importlib.util, json, sys
from pathlib import Path

class NoTrtinfer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "trtinfer" or name.startswith("trtinfer."):
            raise ImportError("trtinfer is not in the Triton container")
        return None

sys.meta_path.insert(0, NoTrtinfer())
sys.path.insert(0, sys.argv[1])
import triton_pb_utils as pb
pb.install()
folder, config_json, out = Path(sys.argv[2]), Path(sys.argv[3]).read_text(), sys.argv[4]
spec = importlib.util.spec_from_file_location("model", folder / "1" / "model.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.TritonPythonModel()
model.initialize({"model_config": config_json})
blobs = [Path(p).read_bytes() for p in sys.argv[5:]]
[response] = model.execute([pb.InferenceRequest(image=pb.bytes_tensor(blobs))])
import numpy as np
np.save(out, pb.response_array(response))
assert not any(m == "trtinfer" or m.startswith("trtinfer.") for m in sys.modules), "trtinfer was imported"
"""


def test_it_runs_where_trtinfer_cannot_be_imported(repo, artifacts, blobs, tmp_path):
    from google.protobuf import json_format

    folder = repo / "resnet-fp32_preprocess"
    config = tmp_path / "config.json"
    config.write_text(json_format.MessageToJson(parse_pbtxt((folder / "config.pbtxt").read_text()),
                                              preserving_proto_field_name=True))
    files = []
    for i, blob in enumerate(blobs[:4]):
        files.append(tmp_path / f"{i}.img")
        files[-1].write_bytes(blob)
    out = tmp_path / "out.npy"
    result = subprocess.run([sys.executable, "-I", "-c", RUN_WITHOUT_TRTINFER, str(FAKES), str(folder), str(config),
                             str(out), *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = preprocess([decode_image_bytes(b) for b in blobs[:4]], Manifest.read(artifacts["fp32"]).preprocess)
    np.testing.assert_array_equal(np.load(out), expected)
    assert json.loads(config.read_text())["backend"] == "python"


def test_a_bad_image_is_an_invalid_argument_not_an_internal_error(repo, blobs):
    """TritonError(str(exc)) defaulted to INTERNAL: clients saw a 500 and retried a request that cannot succeed."""
    model = load_model(repo / "resnet-fp32_preprocess")
    [response] = model.execute([pb.InferenceRequest(image=pb.bytes_tensor([b"GIF89a not accepted"]))])
    assert response.error().code() == pb.TritonError.INVALID_ARG


@pytest.mark.parametrize("pillow, problem", [
    (None, "needs Pillow, which the Python running it cannot import"),
    ("9.0.1", "needs Pillow >= 9.1 (Image.Resampling); this Python has Pillow 9.0.1"),
])
def test_the_load_fails_without_a_usable_pillow_instead_of_every_request(repo, monkeypatch, pillow, problem):
    """Pillow was imported at the first request: a container without it loaded READY and failed every request."""
    import PIL
    from PIL import Image

    if pillow is None:
        monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` raises ImportError, as where it is absent
    else:
        monkeypatch.setattr(PIL, "__version__", pillow)
        monkeypatch.delattr(Image, "Resampling")
    with pytest.raises(RuntimeError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_model(repo / "resnet-fp32_preprocess")


def test_a_python_path_parameter_is_appended_after_the_stubs_own_packages(repo, tmp_path, monkeypatch):
    folder = tmp_path / "resnet-fp32_preprocess"
    shutil.copytree(repo / "resnet-fp32_preprocess", folder)
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    config.parameters["python_path"].string_value = str(tmp_path / "site-packages")
    from google.protobuf import text_format

    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    monkeypatch.setattr(sys, "path", list(sys.path))
    load_model(folder)
    assert sys.path[-1] == str(tmp_path / "site-packages")
