"""Triton Python-backend model: the classifier's input tensor -> its logits, run with ONNX Runtime or OpenVINO.

Written by ``trtinfer export triton --kind cpu --cpu-backend python`` into ``<name>/1/`` beside the
artifact's ``model.onnx``. It serves CPU nodes without Triton's OpenVINO backend, whose batch padding
keeps the pad size of an earlier request and breaks batches assembled from several requests
(triton-inference-server/openvino_backend ``src/openvino.cc`` lines 1063-1083 and 1384-1393 at db19304).

Configuration parameters (written by the export):

* ``runtime``: ``onnxruntime`` or ``openvino``, the Python API that runs ``model.onnx``;
* ``python_path`` (optional): a site-packages folder holding that runtime, APPENDED to ``sys.path``
  in ``initialize`` so the stub's own numpy (first on the path) stays the one in use;
* ``model_file``: the ONNX file name in the version folder.

A runtime that cannot be imported fails ``initialize``, so Triton refuses to load the model (rather
than reporting it READY and failing every request). Dynamic batching hands ``execute`` several
requests: their inputs are run as one batch and the logits split back per request.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

RUNTIMES = ("onnxruntime", "openvino")
DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


def _parameter(config, key, default=None):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


def _import_runtime(runtime, python_path):
    """The runtime's module, with ``python_path`` appended to ``sys.path`` (never put first)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"config parameter runtime is {runtime!r}; use one of {', '.join(RUNTIMES)} "
                         "(trtinfer export triton --python-runtime)")
    if python_path:
        if not Path(python_path).is_dir():
            raise ImportError(f"config parameter python_path {python_path!r} is not a folder in this container; "
                              "mount the environment there or export again with --python-path")
        if python_path not in sys.path:
            sys.path.append(python_path)
    try:
        return __import__(runtime)
    except ImportError as exc:
        where = f"python_path {python_path!r}" if python_path else "no python_path given"
        raise ImportError(f"the classifier runs on {runtime}, which cannot be imported ({exc}; {where}); "
                          f"install {runtime} into the container's Python, or export again with --python-path "
                          "DIR naming a site-packages folder that holds it") from exc


class _OnnxRuntime:
    def __init__(self, module, path):
        options = module.SessionOptions()
        self.session = module.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]


class _OpenVINO:
    def __init__(self, module, path):
        core = module.Core()
        # f32 as trtinfer's own OpenVINO runtime does by default (no bf16 rounding on AMX hosts)
        self.compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.outputs[0]

    def __call__(self, batch):
        return self.request.infer([batch])[self.output]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        runtime = _parameter(config, "runtime", "onnxruntime")
        module = _import_runtime(runtime, _parameter(config, "python_path"))
        path = Path(__file__).with_name(_parameter(config, "model_file", "model.onnx"))
        self.run = (_OnnxRuntime if runtime == "onnxruntime" else _OpenVINO)(module, path)
        self.input_name = config["input"][0]["name"]
        self.input_dtype = DTYPES[config["input"][0]["data_type"]]
        self.output_name = config["output"][0]["name"]
        self.output_dtype = DTYPES[config["output"][0]["data_type"]]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            batch = np.ascontiguousarray(np.concatenate(arrays), dtype=self.input_dtype)
            logits = np.asarray(self.run(batch), dtype=self.output_dtype)
        except Exception as exc:  # one failed run answers every request of the batch with its message
            error = pb_utils.TritonError(f"classifier run failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for array in arrays:
            part = np.ascontiguousarray(logits[start:start + len(array)])
            start += len(array)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, part)]))
        return responses

    def finalize(self):
        del self.run  # the session and its memory go with the model
