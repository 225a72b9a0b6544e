"""``trtinfer calib``: make and inspect calibration sets (.npz) for INT8 builds."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from .. import defaults
from ..errors import TrtInferError
from .build_options import preprocess_options


@contextlib.contextmanager
def progress_tasks(enabled: bool = True) -> Iterator[Callable[[str], Callable[[int, int], None] | None]]:
    """One rich progress display on stderr; yields ``new_task(label) -> progress(done, total)``.

    Draws only on a terminal; with ``enabled=False`` every task's callback is None.
    """
    if not enabled:
        yield lambda label: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:

        def new_task(label: str) -> Callable[[int, int], None]:
            task = bar.add_task(label, total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        yield new_task


@contextlib.contextmanager
def progress_callback(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """A single ``progress(done, total)`` callback (None when disabled)."""
    with progress_tasks(enabled) as new_task:
        yield new_task(description)


@click.group(name="calib")
def calib() -> None:
    """Calibration sets for INT8 builds: drawn from the train split, class-balanced, reproducible."""


@calib.command(name="make")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="CIFAR-10/100 folder (or its parent), ImageFolder-style directory, or .npy/.npz of uint8 NHWC images.")
@click.option("--samples", "-n", default=defaults.CALIB_SAMPLES, show_default=True, type=click.IntRange(1),
              help="Images to draw from the train split (class-balanced).")
@click.option("--seed", default=defaults.SEED, show_default=True, type=click.IntRange(*defaults.SEED_RANGE),
              help="Seed of the draw; same data and seed, same file.")
@preprocess_options(input_size_required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Calibration set to write (.npz).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def make(data: Path, samples: int, seed: int, input_size: int, resize: int | None, normalize: str | None,
         mean: tuple[float, ...] | None, std: tuple[float, ...] | None, output: Path, force: bool,
         progress: bool) -> None:
    """Draw, preprocess and save a calibration set (.npz with its own small manifest)."""
    from trtinfer.calibration.calibset import make_calibration_set
    from trtinfer.preprocess import make_spec

    if output.suffix != ".npz":
        raise TrtInferError(f"-o {output}: calibration sets are .npz files", hint="use -o calib.npz")
    if output.exists() and not force:
        raise TrtInferError(f"{output} already exists", hint="pass --force to replace it, or choose another -o")
    spec = make_spec(input_size, normalize or defaults.NORMALIZE, mean, std, resize=resize)
    with progress_callback("preprocessing calibration images", enabled=progress) as update:
        calib_set = make_calibration_set(data, spec, samples=samples, seed=seed, progress=update)
    calib_set.save(output)
    per_class = calib_set.manifest()["per_class"]
    balance = (f"{len(per_class)} classes, {min(per_class.values())}-{max(per_class.values())} each"
               if per_class else "unlabeled, random draw")
    click.echo(f"wrote {output}: {len(calib_set)} images {list(calib_set.input_shape)} from {calib_set.source} "
               f"({calib_set.split} split; {balance}); normalize {spec.normalize}, seed {seed}, "
               f"sha256 {calib_set.sha256[:16]}")
    for warning in calib_set.warnings:
        click.echo(f"warning: {warning}", err=True)


@calib.command(name="show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the embedded manifest as JSON.")
def show(path: Path, as_json: bool) -> None:
    """Verify a calibration set (sha256) and print its manifest."""
    from trtinfer.calibration.calibset import load_calibration_set

    calib_set = load_calibration_set(path)
    meta = calib_set.manifest()
    if as_json:
        json.dump({k: v for k, v in meta.items() if k != "indices"}, sys.stdout, indent=2)
        click.echo()
        return
    t = meta["transform"]
    click.echo(f"{path}: {meta['count']} images {meta['shape'][1:]} (sha256 verified)")
    click.echo(f"  source     {meta['source']} ({meta['source_kind']}, {meta['split']} split), seed {meta['seed']}")
    click.echo(f"  transform  size {t['input_size']} (resize {t['resize']}), normalize {t['normalize']} "
               f"mean {t['mean']} std {t['std']}")
    if meta["per_class"]:
        counts = meta["per_class"].values()
        click.echo(f"  classes    {len(meta['per_class'])}, {min(counts)}-{max(counts)} images each")
    for warning in meta["warnings"]:
        click.echo(f"  warning    {warning}")
