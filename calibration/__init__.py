"""Calibration and evaluation data: CIFAR-format folders, image folders and arrays, preprocessed
exactly as the artifact's manifest says."""
