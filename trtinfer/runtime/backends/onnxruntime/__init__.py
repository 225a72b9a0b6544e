"""ONNX Runtime: ``loader`` makes every session trtinfer uses, ``runner`` is the CPU backend."""
