"""Labels that never print over each other: each placed beside its point at the first free spot, further out
(with a thin leader line) where the near ones are taken, inside the axes. Rows at near-identical points (a
dozen backends at the same accuracy and a similar speed) then stay legible.

Call :func:`place_labels` after the figure's layout is final (``tight_layout``): placement works in
display coordinates, and offsets are in points, so saving at another dpi keeps what was placed apart apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Distances from the point (points) tried in turn, and the directions at each (degrees, right first).
RADII = (5, 11, 18, 27, 38, 52, 68, 86, 106)
ANGLES = (20, -20, 160, 200, 70, -70, 110, 250, 0, 180, 90, 270)
#: Half the side of the square kept free around each marker (pixels).
MARKER_HALF = 4.0


@dataclass
class Label:
    x: float  # data coordinates of the point
    y: float
    text: str
    color: str = "black"


def _overlaps(a: Any, b: Any) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def place_labels(ax: Any, labels: Sequence[Label], fontsize: float = 7.0) -> list[Any]:
    """Annotate ``ax`` with ``labels`` so that no two overlap each other, a marker of another label, or the
    axes' edge; returns the annotations. A label with no free spot left goes at the last one tried."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = [ax.transData.transform((lab.x, lab.y)) for lab in labels]
    markers = [Bbox.from_extents(cx - MARKER_HALF, cy - MARKER_HALF, cx + MARKER_HALF, cy + MARKER_HALF)
               for cx, cy in centres]
    taken: list[Any] = []
    placed: list[Any] = []
    for i, label in enumerate(labels):
        others = [m for j, m in enumerate(markers) if j != i]
        annotation = None
        for radius in RADII:
            for angle in ANGLES:
                if annotation is not None:
                    annotation.remove()
                dx, dy = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
                ha = "left" if dx > 1 else "right" if dx < -1 else "center"
                va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
                arrow = {"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 2} if radius > 11 else None
                annotation = ax.annotate(label.text, (label.x, label.y), xytext=(dx, dy), textcoords="offset points",
                                         fontsize=fontsize, color=label.color, ha=ha, va=va, arrowprops=arrow)
                annotation.update_positions(renderer)
                box = Text.get_window_extent(annotation, renderer).expanded(1.08, 1.15)  # the text, not its leader
                inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1)
                if inside and not any(_overlaps(box, other) for other in taken + others):
                    taken.append(box)
                    break
            else:
                continue
            break
        placed.append(annotation)
    return placed
