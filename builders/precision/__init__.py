"""The precision stage: FP16 and INT8 ONNX models from the FP32 export (ModelOpt, NNCF), the INT8 method chosen."""
