"""The export stage: the PyTorch model written as ONNX, its memory need estimated first."""
