"""The ``slicer-compile`` command line. Nothing in the package imports it.

One module per family of commands, over shared option types and groups
(``options``), one table printer and the stderr helpers (``output``), and the exit
statuses (``status``); ``main`` is the group and the entry point. Every failure a
user can cause ends as one line on stderr and a non-zero exit status, never a
traceback (``--debug`` shows it).
"""

from slicer_compile.cli.main import cli, main

__all__ = ["cli", "main"]
