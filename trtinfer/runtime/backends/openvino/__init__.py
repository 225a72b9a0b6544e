"""OpenVINO: ``loader`` compiles every model trtinfer runs on it, ``runner`` is the CPU backend."""
