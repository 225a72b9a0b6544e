"""A stand-in for Triton's ``triton_python_backend_utils`` (the module the Python backend's stub gives
``model.py``), holding only the calls our preprocessing model makes, with the shapes Triton documents
(python_backend README: a TYPE_STRING input's ``as_numpy()`` is an object array of bytes; a response holds
output tensors or a ``TritonError``). It checks our model's control flow and tensors, not Triton.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    """python_backend's error: a message and a code (its ``TritonError.<CODE>`` constants; INTERNAL when left out,
    which HTTP clients see as a 500 and retry)."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self._outputs, self._error = output_tensors or [], error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class InferenceRequest:
    """A request as the stub hands it over: input tensors by name."""

    def __init__(self, **inputs: np.ndarray) -> None:
        self.inputs = {name: Tensor(name, array) for name, array in inputs.items()}


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return request.inputs.get(name)


def bytes_tensor(blobs: list[bytes]) -> np.ndarray:
    """A batch of encoded images as Triton gives a TYPE_STRING input of dims [1]: [N, 1] object array."""
    array = np.empty((len(blobs), 1), dtype=np.object_)
    for i, blob in enumerate(blobs):
        array[i, 0] = blob
    return array


def install() -> ModuleType:
    """Register this module as ``triton_python_backend_utils`` and return it."""
    module = sys.modules[__name__]
    sys.modules["triton_python_backend_utils"] = module
    return module


def response_array(response: Any) -> np.ndarray:
    [tensor] = response.output_tensors()
    return tensor.as_numpy()
