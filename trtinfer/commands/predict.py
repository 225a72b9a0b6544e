"""``trtinfer predict ARTIFACT IMAGE...``: the top-k labels of image files, through the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("predict")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 1000), help="Labels per image.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (for scripts).")
@click.option("--backend", default="auto", show_default=True, help="auto, tensorrt, onnxruntime or openvino.")
def predict(artifact: Path, images: tuple[Path, ...], top_k: int, as_json: bool, backend: str) -> None:
    """Classify IMAGES (JPEG, PNG, WebP; any mode: L, RGBA, P, CMYK, 16-bit) with ARTIFACT."""
    import trtinfer
    from trtinfer.errors import DataError
    from trtinfer.preprocess import decode_image_bytes

    decoded = []
    for path in images:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror}", hint="pass image files that exist") from None
        try:
            decoded.append(decode_image_bytes(data))
        except DataError as exc:
            raise DataError(f"{path}: {exc.message}", hint=exc.hint) from None
    with trtinfer.load(artifact, backend=backend) as model:
        results = model.predict(decoded, top_k=top_k)
        facts = {"model": model.manifest.name, "precision": model.manifest.precision, "backend": model.backend}
    for image in decoded:
        image.close()
    if as_json:
        click.echo(json.dumps({**facts, "images": [
            {"image": str(path), "predictions": [{"label": label, "probability": round(p, 6)} for label, p in top]}
            for path, top in zip(images, results)]}, indent=2))
        return
    for path, top in zip(images, results):
        click.echo(f"{path}: " + ", ".join(f"{label} {100 * p:.1f}%" for label, p in top))
