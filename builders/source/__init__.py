"""The source stage: a checkpoint file or directory read safely, its architecture recognised, the model rebuilt."""
