"""Exports of artifacts to other serving systems (Triton Inference Server model repositories)."""
