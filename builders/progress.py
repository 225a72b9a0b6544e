"""Progress and step reporting for long build work, on stderr so stdout stays scriptable."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet

    def step(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold cyan]==>[/] {escape(message)}")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"    {escape(message)}")

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(message)}")

    @contextlib.contextmanager
    def timed(self, message: str) -> Iterator[dict]:
        self.step(message)
        facts: dict = {}
        start = time.perf_counter()
        yield facts
        facts["seconds"] = round(time.perf_counter() - start, 3)
        self.info(f"done in {facts['seconds']:.1f} s")

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yields ``advance(n)``; a live bar on a terminal, nothing when quiet."""
        if self.quiet or total <= 0:
            yield lambda n: None
            return
        bar = Progress(TextColumn("    {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=self.console, transient=True)
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    @contextlib.contextmanager
    def progress_with_status(self, description: str, total: int) -> Iterator[Callable[[int, str], None]]:
        """Yields ``advance(n, status)``: a live bar with a status text (e.g. running loss and accuracy)."""
        if self.quiet or total <= 0:
            yield lambda n, status: None
            return
        bar = Progress(TextColumn("    {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[status]}"), console=self.console, transient=True)
        with bar:
            task = bar.add_task(description, total=total, status="")
            yield lambda n, status: bar.update(task, advance=n, status=status)

    @contextlib.contextmanager
    def tracker(self, description: str) -> Iterator[Callable[[int, int], None]]:
        """Yields ``update(done, total)`` for work whose size is known only once it starts."""
        if self.quiet:
            yield lambda done, total: None
            return
        bar = Progress(TextColumn("    {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=self.console, transient=True)
        task = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task(description, total=total)
            bar.update(task, completed=done, total=total)

        with bar:
            yield update
