"""The models a server serves: loaded with ``trtinfer.load`` (each backend chosen as it chooses, its
dynamic batcher behind it), named, warmed up, and closed together."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from ..runtime import Model, load

if TYPE_CHECKING:
    from ..manifest import Manifest

log = logging.getLogger(__name__)

IMAGE_SUFFIX = "_image"  # each model is also served taking encoded images (one BYTES input "image")
VERSION = "1"
WARM_UP_TIMEOUT_S = 300.0


@dataclass
class ServedModel:
    """One artifact being served: the runtime model and what the protocol says about it."""

    name: str
    model: Model
    directory: Path
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def manifest(self) -> Manifest:
        return self.model.manifest

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    def facts(self) -> dict[str, Any]:
        """What the web page and ``/v1`` show: architecture, precision, backend, recorded accuracy."""
        m = self.manifest
        return {"name": self.name, "arch": m.arch, "precision": m.precision, "backend": self.model.backend,
                "execution": getattr(self.model, "execution", self.model.backend), "classes": m.num_classes,
                "input_size": m.preprocess.input_size, "top1": m.accuracy.top1,
                "top1_reference": m.accuracy.top1_reference, "accuracy_checked": bool(m.accuracy.checked)}

    def warm_up(self) -> None:
        """A direct run (allocations, first-run compilation), then one request through the batcher
        (its workers), each exempt from the serving timeout; then ready."""
        x = np.zeros((1, *self.model.row_shape), np.float32)
        self.model.infer(x)
        self.model.submit(x, timeout=WARM_UP_TIMEOUT_S).result(timeout=WARM_UP_TIMEOUT_S)
        self.ready.set()


class ModelSet:
    """Every served model by name (``<name>`` takes tensors, ``<name>_image`` encoded images)."""

    def __init__(self, models: list[ServedModel]) -> None:
        self.models = {m.name: m for m in models}

    @classmethod
    def load(cls, artifacts: list[Path], name: str | None = None, **options: Any) -> ModelSet:
        if name is not None and len(artifacts) != 1:
            raise DataError(f"--name names one artifact, but {len(artifacts)} were given",
                            hint="leave --name out: each artifact is served under its manifest's name")
        served: list[ServedModel] = []
        try:
            for directory in artifacts:
                model = load(directory, **options)
                served.append(ServedModel(name or model.manifest.name, model, Path(directory)))
                if served[-1].name in {m.name for m in served[:-1]}:
                    raise DataError(f"two artifacts are both named {served[-1].name!r}",
                                    hint="serve one of them, or rename it with --name when serving it alone")
                if served[-1].name.endswith(IMAGE_SUFFIX):
                    raise DataError(f"model name {served[-1].name!r} ends in {IMAGE_SUFFIX!r}, which names the "
                                    "image-taking twin of each model", hint="rename it with --name")
        except BaseException:
            for m in served:
                m.model.close()
            raise
        return cls(served)

    def find(self, name: str) -> tuple[ServedModel, bool] | None:
        """The model a protocol name means, and whether it is the image twin; None when unknown."""
        if name in self.models:
            return self.models[name], False
        if name.endswith(IMAGE_SUFFIX) and name[:-len(IMAGE_SUFFIX)] in self.models:
            return self.models[name[:-len(IMAGE_SUFFIX)]], True
        return None

    def names(self) -> list[str]:
        return [n for m in self.models for n in (m, m + IMAGE_SUFFIX)]

    def ready(self) -> bool:
        return all(m.ready.is_set() for m in self.models.values())

    def warm_up(self) -> None:
        for m in self.models.values():
            try:
                m.warm_up()
            except Exception:  # noqa: BLE001 -- a model that cannot warm up stays unready, the others serve
                log.exception("warm-up of %s failed; it stays unready", m.name)

    def close(self, timeout: float | None = None) -> None:
        for m in self.models.values():
            try:
                m.model.close(timeout=timeout)
            except Exception:  # noqa: BLE001 -- close every model even if one fails
                log.exception("closing %s failed", m.name)
