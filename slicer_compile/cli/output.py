"""What the commands print: one table printer, progress, notes and JSON.

Tables go to stdout and are fitted to the terminal by leaving out whole columns,
the least useful first, never by cutting a number; off a terminal (a pipe, a
file) nothing is left out. Progress and notes go to stderr, so ``--json`` output
and tables stay clean for scripts.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass

import click

from slicer_compile.cli.options import VERBOSITY

#: rich draws "│ cell │": one space either side and one rule per column, plus the last rule.
_CELL_PADDING = 3


@dataclass(frozen=True)
class Column:
    """One table column. ``keep``: higher is kept longer when the table must narrow."""

    header: str
    keep: int = 0
    justify: str = "right"


def print_table(title: str, columns: list[Column], rows: list[list[str]], caption: str | None = None) -> None:
    """Print a table on stdout that fits the terminal (whole columns left out, the
    lowest ``keep`` first, the first column never) and names what it left out."""
    from rich.console import Console
    from rich.table import Table

    terminal = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    widths = [max([_longest_word(c.header)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))

    def width_of(indices):
        return sum(widths[i] + _CELL_PADDING for i in indices) + 1

    left_out = []
    while terminal and width_of(shown) > terminal and len(shown) > 1:
        victim = min(shown[1:], key=lambda i: (columns[i].keep, -i))
        shown.remove(victim)
        left_out.append(columns[victim].header)
    notes = [caption] if caption else []
    if left_out:
        notes.append(f"left out to fit {terminal} columns: {', '.join(left_out)} (widen the terminal, or --json)")
    table = Table(title=title, caption="\n".join(notes) or None, caption_justify="left")
    for i in shown:
        table.add_column(columns[i].header, justify=columns[i].justify, min_width=widths[i], max_width=widths[i])
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    # Off a terminal rich would assume 80 columns and cut: give it the table's own width.
    Console(width=terminal or max(width_of(shown), len(title) + 4, 80)).print(table)


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=1, default=_json_default))


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, quiet=VERBOSITY.quiet)


class Progress:
    """A progress bar per compiler stage, on stderr (none with ``--quiet``)."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn
        from rich.progress import TimeElapsedColumn, TimeRemainingColumn

        console = stderr_console()
        # Off a terminal (a log, a pipe) a live bar is noise, and its stop would leave a
        # blank line before a one-line error: shown only to a person watching.
        self._progress = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                      transient=True, console=console, disable=not console.is_terminal)
        self._started = False  # shown from the first stage on: a command refused before any leaves no blank line
        self._tasks = {}
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self._started:
            self._progress.__enter__()
            self._started = True
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        if self._started:
            self._progress.__exit__(*exc)


class NoteHandler(logging.Handler):
    """The library's log records as lines on stderr: ``note: …`` for warnings."""

    _PREFIX = {logging.WARNING: "note", logging.INFO: "info", logging.DEBUG: "debug"}

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            return  # failures end the command with its own one-line error
        prefix = "" if record.name == "slicer_compile.access" else f"{self._PREFIX.get(record.levelno, 'note')}: "
        click.echo(f"{prefix}{record.getMessage()}", err=True)


def note(message: str) -> None:
    """A line on stderr unless ``--quiet``."""
    if not VERBOSITY.quiet:
        click.echo(f"note: {message}", err=True)
