"""A progress bar for waits (``progress=True``), drawn with rich on stderr so stdout stays the
program's. rich is imported only when a bar is asked for, which keeps ``import skyloom`` light."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int, done: int, label: str = "waiting") -> Iterator[Callable[[int], None]]:
    """A bar of ``total`` items, ``done`` of them already; yields ``advance(n)``, safe from any thread."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError as exc:  # pragma: no cover - rich is a dependency of the client today
        raise ImportError("progress=True draws its bar with rich: pip install rich") from exc
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    with bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n: bar.advance(task, n)
