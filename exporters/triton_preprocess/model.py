"""Triton Python-backend model: encoded images (one BYTES input) -> the classifier's input tensor.

Written by ``trtinfer export triton --with-preprocess`` into ``<name>_preprocess/1/`` beside
``trtinfer_pixels.py``, a verbatim copy of ``trtinfer/pixels.py``: the same decode, size bounds,
8-bit RGB conversion, resize, crop and normalisation as ``trtinfer.preprocess``, so Triton feeds the
classifier exactly the tensor ``trtinfer serve`` would. Needs numpy and Pillow only (no trtinfer
inside the Triton container); the manifest's preprocessing arrives as the model configuration's
``preprocess`` parameter (JSON).

A bad image fails its own request with a one-line INVALID_ARG error naming the problem (a client error:
not retried, HTTP 400); the other requests of the same batch are answered.

Pillow is imported and checked in ``initialize``: a container without it (the stock ``-py3`` image has
none), or with a Pillow older than 9.1 (no ``Image.Resampling``), fails the model's load with the fix,
instead of loading READY and failing every request. The optional ``python_path`` parameter names a
site-packages folder appended to ``sys.path`` (appended, never first: the stub keeps its own numpy).
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

PIXELS_FILE = "trtinfer_pixels.py"
SPEC_KEYS = ("input_size", "resize", "mean", "std", "scale", "interpolation")
DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


def _load_pixels():
    """The sibling ``trtinfer_pixels.py``, by path (whatever the stub put on ``sys.path``)."""
    path = Path(__file__).with_name(PIXELS_FILE)
    spec = importlib.util.spec_from_file_location("trtinfer_pixels", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}: export the model again with trtinfer export triton")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("trtinfer_pixels", module)
    spec.loader.exec_module(module)
    return module


#: Image.Resampling, which trtinfer_pixels.py resizes with, came with Pillow 9.1
PILLOW_MIN = (9, 1)


def _append_python_path(config):
    """The ``python_path`` parameter's folder, appended to ``sys.path`` (after the stub's own packages)."""
    path = config.get("parameters", {}).get("python_path", {}).get("string_value", "")
    if path and path not in sys.path:
        sys.path.append(path)


def check_pillow():
    """Pillow importable and new enough, or an error naming the fix (which fails the model's load)."""
    try:
        import PIL
        from PIL import Image
    except ImportError as exc:
        raise RuntimeError(f"the preprocessing model needs Pillow, which the Python running it cannot import ({exc}); "
                           "install it in the Triton image (pip install pillow, or apt-get install python3-pil), pass "
                           "--python-env to trtinfer export triton, or --python-path a site-packages holding it") from None
    version = tuple(int(part) for part in PIL.__version__.split(".")[:2] if part.isdigit())
    if not hasattr(Image, "Resampling") or version < PILLOW_MIN:
        raise RuntimeError(f"the preprocessing model needs Pillow >= {'.'.join(map(str, PILLOW_MIN))} "
                           f"(Image.Resampling); this Python has Pillow {PIL.__version__}: upgrade it in the Triton image")


def invalid_argument(message):
    """A client's bad image: INVALID_ARG where this python_backend's TritonError takes a code (python_backend's
    2022 ``PbError`` held a message only), else the plain error (INTERNAL)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        _append_python_path(config)
        check_pillow()
        self.pixels = _load_pixels()
        spec = json.loads(config["parameters"]["preprocess"]["string_value"])
        self.spec = {key: spec[key] for key in SPEC_KEYS}
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.output_dtype = DTYPES[config["output"][0]["data_type"]]  # the classifier's input type

    def _tensor(self, blobs):
        images = []
        try:
            for blob in blobs:
                images.append(self.pixels.decode_image_bytes(bytes(blob)))
            return self.pixels.images_to_tensor(images, **self.spec)
        finally:
            for image in images:
                image.close()

    def execute(self, requests):
        responses = []
        for request in requests:
            blobs = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
            try:
                tensor = self._tensor(blobs)
            except self.pixels.ImageError as exc:
                responses.append(pb_utils.InferenceResponse(error=invalid_argument(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(self.output_name, np.ascontiguousarray(tensor, self.output_dtype))]))
        return responses

    def finalize(self):
        self.pixels = None
