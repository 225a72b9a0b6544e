"""The engine-stage options shared by ``trtinfer build`` (and ``build --from-onnx``).

Usage::

    @click.command()
    @engine_options
    def build(**kwargs):
        settings, require_engine = pop_engine_options(kwargs)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from trtinfer.builders.engine.profiles import DEFAULT_BATCH_SPEC, MAX_PROFILES, parse_batch_profiles

F = TypeVar("F", bound=Callable[..., Any])
ENGINE_OPTION_NAMES = ("batch", "timing_cache", "opt_level", "workspace", "device", "require_engine")


def engine_options(f: F) -> F:
    """Add --batch (repeatable), --timing-cache, --opt-level, --workspace, --device, --require-engine."""
    from trtinfer.builders.engine.settings import DEFAULT_OPT_LEVEL, MAX_OPT_LEVEL, MIN_OPT_LEVEL

    options = [
        click.option("--batch", "batch", multiple=True, metavar="MIN:OPT:MAX",
                     help=f"Engine batch range; repeat for several profiles (at most {MAX_PROFILES}), "
                          f"e.g. --batch 1:1:8 --batch 16:64:256. Default {DEFAULT_BATCH_SPEC}."),
        click.option("--timing-cache", "timing_cache", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="TensorRT timing cache file, loaded before and saved after the build "
                                        "(default: one per TensorRT version and GPU under ~/.cache/trtinfer)."),
        click.option("--opt-level", "opt_level", type=click.IntRange(MIN_OPT_LEVEL, MAX_OPT_LEVEL),
                     default=DEFAULT_OPT_LEVEL, show_default=True,
                     help="TensorRT builder optimization level (higher: longer build, maybe faster engine)."),
        click.option("--workspace", "workspace", type=click.IntRange(min=1), default=None, metavar="MiB",
                     help="Limit TensorRT's scratch memory during the build (default: as much as it needs)."),
        click.option("--device", "device", type=click.IntRange(min=0), default=0, show_default=True,
                     help="GPU index to build the engine on."),
        click.option("--require-engine", "require_engine", is_flag=True, default=False,
                     help="Fail when the TensorRT engine cannot be built here, instead of skipping that stage."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def engine_settings_from_options(batch: tuple[str, ...] | list[str] = (), timing_cache: Path | None = None,
                                 opt_level: int | None = None, workspace: int | None = None,
                                 device: int = 0) -> Any:
    """Parsed option values -> ``EngineBuildSettings`` (raises TrtInferError on a bad --batch)."""
    from trtinfer.builders.engine.settings import DEFAULT_OPT_LEVEL, EngineBuildSettings

    return EngineBuildSettings(profiles=parse_batch_profiles(batch),
                               opt_level=DEFAULT_OPT_LEVEL if opt_level is None else int(opt_level),
                               workspace_mib=workspace, device=int(device),
                               timing_cache=Path(timing_cache) if timing_cache else None)


def pop_engine_options(kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """Remove the engine options from a command's kwargs; returns (EngineBuildSettings, require_engine)."""
    values = {name: kwargs.pop(name) for name in ENGINE_OPTION_NAMES if name in kwargs}
    require = bool(values.pop("require_engine", False))
    return engine_settings_from_options(**values), require
