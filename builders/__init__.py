"""Build-time tooling: load checkpoints, export ONNX, reduce precision, validate, build engines.

One folder per stage, in pipeline order: ``source/`` (checkpoints, architectures, the card), ``export/``,
``precision/`` (FP16, INT8, the method choice), ``checks/`` (the export check, the accuracy guard, the FP16
overflow scan, each CPU execution) and ``engine/`` (TensorRT). ``pipeline.py`` runs them; ``options.py``,
``progress.py``, ``logits.py`` and ``destination.py`` are shared by all. A stage imports only itself and
the stages before it (``python scripts/import_graph.py`` checks).

Imported as ``trtinfer.builders``; needs the ``[build]`` extra (torch, torchvision, onnx, ModelOpt).
"""
