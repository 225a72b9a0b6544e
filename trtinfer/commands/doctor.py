"""``trtinfer doctor``: what this host has and which stages can run here."""

from __future__ import annotations

import json

import click

from trtinfer.doctor import CAPABILITIES, collect, missing_requirements
from trtinfer.errors import TrtInferError


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
@click.option("--require", "required", multiple=True,
              type=click.Choice(list(CAPABILITIES)),
              help="Exit 1 unless this capability is present here (repeatable).")
def doctor(as_json: bool, required: tuple[str, ...]) -> None:
    """Report OS, CPU, GPU, CUDA, TensorRT and the Python libraries, and which stages can run here."""
    report = collect()
    if as_json:
        data = report.to_dict()
        data["required"] = {name: report.capabilities[name] for name in required}
        click.echo(json.dumps(data, indent=2))
    else:
        _print_tables(report)
    missing = missing_requirements(report, list(required))
    if missing:
        raise TrtInferError("required capability missing: " + "; ".join(missing),
                            hint="run `trtinfer doctor` for the full report")


def _print_tables(report) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    host = Table(title="trtinfer doctor", box=box.SIMPLE_HEAD, show_lines=False)
    host.add_column("")
    host.add_column("component", style="bold")
    host.add_column("found", overflow="fold")
    host.add_column("note", overflow="fold", style="dim")
    for f in report.findings:
        mark = "" if f.ok is None else ("[green]ok[/]" if f.ok else "[red]--[/]")
        host.add_row(mark, f.name, f.value, f.detail)
    console.print(host)

    stages = Table(title="stages on this host", box=box.SIMPLE_HEAD)
    stages.add_column("stage", style="bold")
    stages.add_column("runs here")
    stages.add_column("why", overflow="fold")
    for s in report.stages:
        stages.add_row(s.name, "[green]yes[/]" if s.ready else "[red]no[/]", s.reason)
    console.print(stages)
