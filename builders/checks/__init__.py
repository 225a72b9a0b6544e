"""The checks stage: the export against PyTorch, the accuracy guard, the FP16 overflow scan, each CPU execution."""
