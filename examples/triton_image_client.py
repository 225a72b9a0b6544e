"""Send image files to a classifier's ``<name>_image`` model over the Open Inference Protocol.

The same code talks to ``trtinfer serve`` and to Triton Inference Server running a repository
written by ``trtinfer export triton --with-preprocess``: only ``--url`` differs.

    python examples/triton_image_client.py --url localhost:8000 --model resnet18-fp32 cat.jpg dog.png

It sends the encoded files as one BYTES batch (input ``image``, shape [N, 1]) and asks the server's
classification extension for the top classes (``class_count``), which come back as
``"score:index:label"`` strings. Needs only ``tritonclient[http]`` and numpy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient


def classify(url: str, model: str, images: list[Path], top_k: int = 3) -> list[list[tuple[str, float]]]:
    """Top-``top_k`` (label, score) per image; the scores are the model's logits."""
    client = httpclient.InferenceServerClient(url=url)
    try:
        name = model + "_image"
        output = client.get_model_metadata(name)["outputs"][0]["name"]
        batch = np.array([[path.read_bytes()] for path in images], dtype=np.object_)
        tensor = httpclient.InferInput("image", list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch, binary_data=True)
        wanted = httpclient.InferRequestedOutput(output, binary_data=True, class_count=top_k)
        result = client.infer(name, [tensor], outputs=[wanted])
        rows = result.as_numpy(output).reshape(len(images), top_k)
    finally:
        client.close()
    top = []
    for row in rows:
        entries = []
        for entry in row:
            score, _, label = (entry.decode() if isinstance(entry, bytes) else str(entry)).split(":", 2)
            entries.append((label, float(score)))
        top.append(entries)
    return top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8000", help="host:port of the server's HTTP endpoint")
    parser.add_argument("--model", required=True, help="the classifier's name (the image model is <name>_image)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path, entries in zip(args.images, classify(args.url, args.model, args.images, args.top_k)):
        print(f"{path}: " + ", ".join(f"{label} ({score:.3f})" for label, score in entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
