"""``trtinfer`` command line. Commands are imported lazily so ``--help`` needs no torch or CUDA."""

from __future__ import annotations

import importlib
import logging
import signal
import sys

import click

from ._version import __version__
from .errors import TrtInferError
from .interrupts import Interrupted, termination_raises

# name -> "module:attribute"; each command lives in the module that owns its work.
COMMANDS = {
    "build": "trtinfer.commands.build:build",
    "bench": "trtinfer.commands.bench:bench",
    "inspect": "trtinfer.commands.inspect:inspect_cmd",
    "calib": "trtinfer.commands.calib:calib",
    "doctor": "trtinfer.commands.doctor:doctor",
    "predict": "trtinfer.commands.predict:predict",
    "serve": "trtinfer.commands.serve:serve",
    "export": "trtinfer.commands.export:export",
    "finetune": "trtinfer.commands.finetune:finetune",
}


def _own_records(record: logging.LogRecord) -> bool:
    return record.name.startswith("trtinfer") or record.levelno >= logging.ERROR


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trtinfer")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Turn fine-tuned torchvision classifiers into validated ONNX / TensorRT artifacts and run them fast."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:  # other libraries' (ModelOpt's, ONNX's) chatter only with -vv, unless it is an error
        for handler in logging.getLogger().handlers:
            handler.addFilter(_own_records)


def _interrupted(exc: Interrupted) -> int:
    """Say what the interrupt left: nothing, or the artifacts completed before it arrived."""
    name = signal.Signals(exc.signum).name
    if exc.written:
        click.echo(f"interrupted ({name}) after these were written completely: "
                   + ", ".join(str(p) for p in exc.written), err=True)
    else:
        click.echo(f"interrupted ({name}): nothing was written, temporaries removed", err=True)
    return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 1; SIGINT and SIGTERM both
    unwind (temporaries removed) and exit 128 + the signal number."""
    try:
        with termination_raises():
            cli.main(args=argv, prog_name="trtinfer", standalone_mode=False)
    except TrtInferError as exc:
        click.echo(f"error: {exc.one_line()}", err=True)
        return 1
    except Interrupted as exc:
        return _interrupted(exc)
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt into Abort
        if isinstance(exc.__cause__, Interrupted):
            return _interrupted(exc.__cause__)
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as exc:  # a bad option value: one line naming the option, like every other error
        where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{where}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
