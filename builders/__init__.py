"""Build-time tooling: load checkpoints, export ONNX, reduce precision, validate, build engines.

Imported as ``trtinfer.builders``; needs the ``[build]`` extra (torch, torchvision, onnx, ModelOpt).
"""
