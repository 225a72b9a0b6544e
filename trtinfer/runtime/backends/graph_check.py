"""The manifest's shapes against the model graph a backend actually loaded.

A manifest whose input size or class count disagrees with its model would preprocess images to
the wrong size or map logits to the wrong labels; each backend reads its session's own input and
output metadata (the runtime needs no ``onnx`` package for this) and refuses such an artifact.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import ArtifactError
from ...manifest import Manifest


def _dims(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_graph_shapes(manifest: Manifest, input_shape: Sequence[int | None], output_shape: Sequence[int | None],
                       where: str) -> None:
    """``input_shape``/``output_shape``: the graph's dims, ``None`` where dynamic. Static dims past the
    batch must equal the manifest's; a dynamic one is accepted (the backend resolves it at run time)."""
    for what, want, got in (("input", manifest.input.shape, input_shape), ("output", manifest.output.shape,
                                                                           output_shape)):
        if len(want) != len(got) or any(g is not None and w != -1 and int(g) != int(w)
                                         for w, g in zip(want[1:], list(got)[1:])):
            raise ArtifactError(f"{where}: the model's {what} is {_dims(got)} but the manifest says {want}",
                                hint="the manifest does not belong to this model; rebuild the artifact (trtinfer build)")


def ort_dims(shape: Sequence[object]) -> list[int | None]:
    """ONNX Runtime's NodeArg.shape (ints, names or None) -> ints with None where dynamic."""
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def openvino_dims(partial_shape: object) -> list[int | None]:
    """OpenVINO's PartialShape -> ints with None where dynamic."""
    return [d.get_length() if d.is_static else None for d in partial_shape]  # type: ignore[attr-defined]
