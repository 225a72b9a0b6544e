"""The two exception roots: user-facing errors become one CLI line, internal errors keep a traceback."""

from __future__ import annotations


class TrtInferError(Exception):
    """Something the user can fix: bad input, a missing dependency, an incompatible artifact.

    The CLI prints ``error: <message>`` (plus ``hint: <hint>`` when given) and exits 1.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def __str__(self) -> str:
        return self.one_line()


class ArtifactError(TrtInferError):
    """An artifact directory is missing, incomplete, tampered with, or of an unknown schema."""


class CheckpointError(TrtInferError):
    """A checkpoint cannot be read or does not fit the requested architecture."""


class ValidationError(TrtInferError):
    """An exported model does not compute what the source model computes."""


class AccuracyError(TrtInferError):
    """A reduced-precision build lost more accuracy than allowed."""


class DataError(TrtInferError):
    """Calibration or evaluation data is missing, malformed or does not fit the model."""


class BackendUnavailable(TrtInferError):
    """A requested backend (TensorRT, CUDA, OpenVINO...) cannot run on this host."""


class OverloadedError(TrtInferError):
    """The dynamic batcher's queue is full; retry later or raise its capacity."""


class InternalError(RuntimeError):
    """A bug in trtinfer: keeps its traceback and asks for a report."""
