"""TensorRT and CUDA: ``loader`` (import guard, logger bridge, plan compatibility, engine
deserialization), ``runner`` (the GPU backend) with its ``lanes`` and ``engine_io``, and the CUDA
layer it runs on (``cuda``, ``devices``, ``cuda_graphs``)."""
