"""One folder per external runtime library: ``onnxruntime/``, ``openvino/``, ``tensorrt/``.

Each holds ``loader.py``, the library's import guard and the one place its sessions, compiled
models or engines are made (the runtime, the build's checks, calibration diagnostics and the
benchmark all go through it, so the options are said once), and ``runner.py``, the
:class:`~trtinfer.runtime.model.Model` subclass that runs an artifact on it. Nothing here imports
the library itself at import time.
"""
