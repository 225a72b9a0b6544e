"""The engine stage: a validated ONNX artifact -> ``model.plan``, built by TensorRT on this GPU."""
