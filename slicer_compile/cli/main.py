"""The ``slicer-compile`` group and entry point: commands, exit codes, one-line errors."""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path

import click

from slicer_compile import __version__
from slicer_compile.cli import (
    bench_commands,
    codec_commands,
    compile_commands,
    llm_commands,
    runtime_commands,
    select_command,
)
from slicer_compile.cli.options import VERBOSITY
from slicer_compile.cli.output import NoteHandler
from slicer_compile.cli.status import EXIT_ABORTED, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from slicer_compile.errors import SlicerCompileError

EPILOG = """\b
Exit status: 0 done; 1 failed (the message says why); 2 bad command line;
3 no split meets the constraints (select, run); 130 interrupted.
-v/--verbose, -q/--quiet and --debug (the traceback; also SLICER_DEBUG=1) work on
every command."""


class _CompileByDefault(click.Group):
    """``slicer-compile MODEL.onnx ...`` means ``slicer-compile compile MODEL.onnx ...``;
    a first word close to a command name that is not a file is a typo, not a model."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            word = args[0]
            close = difflib.get_close_matches(word, list(self.commands), n=1, cutoff=0.6)
            if close and not Path(word).exists():
                raise click.UsageError(f"no such command {word!r} (did you mean {close[0]}?)")
            args = ["compile", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_CompileByDefault, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(__version__, "--version", prog_name="slicer-compile")
def cli() -> None:
    """Split a DNN between edge devices and a shared GPU server, with a compressing
    codec for the intermediate feature.

    \b
    slicer-compile MODEL.onnx --device jetson -o out/   compile (same as: compile MODEL.onnx ...)
    slicer-compile devices                              device profiles known
    slicer-compile profile MODEL.onnx -o prof.json      measure per-node latency here
    slicer-compile inspect out/                         the split table
    slicer-compile llm MODEL --device jetson -o lm/     a decoder-only LLM, per layer
    slicer-compile select out/ --bandwidth 10MHz ...    split and knobs for a channel
    slicer-compile serve out/ | run out/ --server ...   run the split for real
    slicer-compile generate lm/ --server ... --prompt   an LLM split token by token
    """


for _module in (compile_commands, llm_commands, select_command, runtime_commands, bench_commands, codec_commands):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn every expected failure into one line and an exit code."""
    logger = logging.getLogger("slicer_compile")
    if not any(isinstance(h, NoteHandler) for h in logger.handlers):
        logger.addHandler(NoteHandler())
        logger.propagate = False
    logger.setLevel(VERBOSITY.level)
    try:
        result = cli.main(args=argv, prog_name="slicer-compile", standalone_mode=False)
    except click.UsageError as exc:
        _fail(_usage_message(exc), EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", EXIT_ABORTED)
    except (SlicerCompileError, OSError, ValueError) as exc:
        if VERBOSITY.debug or os.environ.get("SLICER_DEBUG"):
            raise
        _fail(str(exc) or type(exc).__name__, EXIT_FAILURE)
    sys.exit(result if isinstance(result, int) else EXIT_OK)


def _usage_message(exc: click.UsageError) -> str:
    message = exc.format_message()
    if exc.ctx is not None and "--help" not in message:
        message += f" (see: {exc.ctx.command_path} --help)"
    return message


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)
