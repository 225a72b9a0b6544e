"""A spy on the image-folder decoder: how many native-size images are decoded, and how many are alive at once."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np


class DecodeCounter:
    """Wraps ``trtinfer.calibration.sources.decode_image`` (install with ``monkeypatch.setattr``); ``decoded`` counts
    calls, ``most`` the largest number of decoded arrays still referenced right after a decode."""

    def __init__(self) -> None:
        from trtinfer.calibration import sources

        self._decode = sources.decode_image
        self._alive: list[weakref.ref] = []
        self.most = 0

    @property
    def decoded(self) -> int:
        return len(self._alive)

    def __call__(self, path: Path) -> np.ndarray:
        image = self._decode(path)
        self._alive.append(weakref.ref(image))
        self.most = max(self.most, sum(ref() is not None for ref in self._alive))
        return image

    def install(self, monkeypatch) -> DecodeCounter:
        from trtinfer.calibration import sources

        monkeypatch.setattr(sources, "decode_image", self)
        return self
