"""Option types and option groups shared by the commands (Polygraphy's ``tools/args``
idea, in click): each option is declared once, with its range and its unit, so every
command that takes it checks it the same way and names the flag when it refuses."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import click

from slicer_compile.backends.registry import BACKENDS, DEFAULT_BACKEND
from slicer_compile.errors import ConfigError

# --- verbosity, shared by every command -------------------------------------------------


@dataclass
class Verbosity:
    """What ``-v``/``-q``/``--debug`` asked for; read by the entry point and the printers."""

    level: int = logging.WARNING
    debug: bool = False

    @property
    def quiet(self) -> bool:
        return self.level > logging.WARNING


#: The process-wide setting (one command per process).
VERBOSITY = Verbosity()


def _set_verbose(ctx, param, value):
    if value:
        VERBOSITY.level = min(VERBOSITY.level, logging.INFO)
    _apply_level()


def _set_quiet(ctx, param, value):
    if value and VERBOSITY.level >= logging.WARNING:
        VERBOSITY.level = logging.ERROR
    _apply_level()


def _set_debug(ctx, param, value):
    if value:
        VERBOSITY.debug = True
        VERBOSITY.level = logging.DEBUG
    _apply_level()


def _apply_level() -> None:
    logging.getLogger("slicer_compile").setLevel(VERBOSITY.level)


def verbosity_options(command):
    """``-v/--verbose``, ``-q/--quiet`` and ``--debug``, on every command."""
    for option in reversed([
        click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbose,
                     help="Say more: notes and each stage's details."),
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                     help="Say less: no progress bars or notes, errors only."),
        click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, envvar="SLICER_DEBUG",
                     help="Show the traceback of a failure (also: SLICER_DEBUG=1)."),
    ]):
        command = option(command)
    return command


# --- parameter types -------------------------------------------------------------------


class Quantity(click.ParamType):
    """A number with a unit (``50ms``, ``2GB``, ``10MHz``, ``20Mbps``) inside a range of
    values that can be meant. A bare number is refused: ``--deadline 50`` could be
    seconds or milliseconds."""

    _EXAMPLES = {"time": "50ms", "bytes": "2GB", "frequency": "10MHz", "rate": "20Mbps"}
    _UNITS = {"time": "s", "bytes": "B", "frequency": "Hz", "rate": "bit/s"}

    def __init__(self, kind: str, minimum: float | None = None, maximum: float | None = None,
                 allow_zero: bool = False):
        self.kind, self.minimum, self.maximum, self.allow_zero = kind, minimum, maximum, allow_zero
        self.name = kind

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        from slicer_compile.select.units import parse_quantity

        text = str(value).strip()
        if self.allow_zero and text in ("0", "0.0"):
            return 0.0
        try:
            quantity = parse_quantity(text, self.kind, require_unit=True)
        except ConfigError as exc:
            self.fail(f"{exc} (e.g. {self._EXAMPLES[self.kind]})", param, ctx)
        unit = self._UNITS[self.kind]
        if self.minimum is not None and quantity < self.minimum:
            self.fail(f"{text} is below {_format(self.minimum, unit)}, the least that can be meant", param, ctx)
        if self.maximum is not None and quantity > self.maximum:
            self.fail(f"{text} is above {_format(self.maximum, unit)}, the most that can be meant", param, ctx)
        return quantity


def _format(value: float, unit: str) -> str:
    return f"{value:g} {unit}"


class NumberList(click.ParamType):
    """A comma-separated list of numbers, each inside a range."""

    name = "list"

    def __init__(self, kind=float, minimum: float | None = None, maximum: float | None = None,
                 max_open: bool = False):
        self.kind, self.minimum, self.maximum, self.max_open = kind, minimum, maximum, max_open

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            items = [self.kind(item) for item in str(value).split(",") if item.strip()]
        except ValueError:
            self.fail(f"must be a comma-separated list of numbers, got {value!r}", param, ctx)
        if not items:
            self.fail("is empty", param, ctx)
        for item in items:
            if self.minimum is not None and item < self.minimum:
                self.fail(f"{item:g} is below {self.minimum:g}", param, ctx)
            if self.maximum is not None and (item >= self.maximum if self.max_open else item > self.maximum):
                self.fail(f"{item:g} must be {'below' if self.max_open else 'at most'} {self.maximum:g}", param, ctx)
        return items


class InputShape(click.ParamType):
    """``NAME=1x3x224x224``: every dimension a positive integer."""

    name = "NAME=DxD..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        name, sep, dims = str(value).partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape:
            self.fail(f"takes NAME=DxDxD, got {value!r}", param, ctx)
        if any(d < 1 for d in shape):
            self.fail(f"{value!r} has a dimension below 1", param, ctx)
        return name, shape


def shapes_dict(specs) -> dict | None:
    """The ``--input-shape`` values as {name: shape}; None when none was given."""
    shapes = {}
    for name, shape in specs:
        if name in shapes:
            raise click.BadParameter(f"{name!r} is given twice", param_hint="'--input-shape'")
        shapes[name] = shape
    return shapes or None


#: Ports: 0 asks the system for a free one (what tests use); 1..65535 otherwise.
PORT = click.IntRange(0, 65535)
POSITIVE = click.IntRange(min=1)
#: Memory budgets below 1 kB cannot be meant (a model's weights alone are larger).
MEMORY = Quantity("bytes", minimum=1e3)
#: Deadlines from 1 µs to a day.
DEADLINE = Quantity("time", minimum=1e-6, maximum=86400.0)
#: Channel bandwidth: 1 kHz .. 1 THz.
BANDWIDTH = Quantity("frequency", minimum=1e3, maximum=1e12)
#: Transmission rate: 1 kbit/s .. 10 Tbit/s.
RATE = Quantity("rate", minimum=1e3, maximum=1e13)


# --- option groups ---------------------------------------------------------------------


def backend_option(help_text: str):
    """``--backend``, its choices from the one list of backends."""
    return click.option("--backend", default=DEFAULT_BACKEND, show_default=True, type=click.Choice(list(BACKENDS)),
                        help=help_text)


def json_option(what: str = "the result"):
    """``--json``: one meaning on every command, print JSON on stdout instead of the table."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout instead of a table.")


def artifact_argument(command):
    return click.argument("artifact_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))(command)


def channel_options(required: bool):
    """The channel, deadline and memory of a selector query (select, run)."""
    def decorate(command):
        for option in reversed([
            click.option("--bandwidth", type=BANDWIDTH, required=required, default=None if required else "10MHz",
                         show_default=not required, help="Channel bandwidth W, with a unit: 10MHz."),
            click.option("--snr-db", type=float, help="Average SNR in dB."),
            click.option("--deadline", type=DEADLINE, required=required,
                         help="Deadline D for edge compute + encode + transmission, with a unit: 50ms."),
            click.option("--memory", type=MEMORY, required=required, default=None if required else "8GB",
                         show_default=not required, help="Edge memory budget M, with a unit: 2GB."),
            click.option("--epsilon", default=1e-3, show_default=True,
                         type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Target outage probability ε."),
            click.option("--accuracy-budget", default=0.01, show_default=True, type=click.FloatRange(0, 1),
                         help="Fidelity drop allowed against the uncompressed model."),
        ]):
            command = option(command)
        return command
    return decorate


# --- codec knobs ---------------------------------------------------------------------------

#: Every codec knob the command line takes, declared once: (flag, type, help). Each maps to
#: the config field of the same name (dashes as underscores).
_KNOB_OPTIONS = {
    "sparsity": (float, "SLICER: fraction of elements dropped, in [0, 1)."),
    "lam": (float, "SLICER: asymmetry λ in (-1, 1)."),
    "blocks": (NumberList(int), "SLICER: magnitude blocks per sign, M+,M- (e.g. 3,3)."),
    "q-bits": (int, "SLICER: reference bit-width."),
    "q-min": (int, "SLICER / TAB-Q: lowest bit-width."),
    "delta": (float, "SLICER / TAB-Q: DS distortion budget."),
    "tau": (float, "TAB-Q: threshold for exact values."),
    "q-max": (int, "TAB-Q: bits per quantised element, sign included."),
    "bits": (int, "dense: bits per element, 1..8."),
}
SLICER_KNOBS = ("sparsity", "lam", "blocks", "q-bits", "q-min", "delta")
ALL_KNOBS = tuple(_KNOB_OPTIONS)


def codec_knob_options(names=ALL_KNOBS):
    """The codec knob flags (each None unless given; the codec config checks the ranges)."""
    def decorate(command):
        for name in reversed(names):
            kind, help_text = _KNOB_OPTIONS[name]
            command = click.option(f"--{name}", name.replace("-", "_"), type=kind, default=None, help=help_text)(command)
        return command
    return decorate


def chosen_knobs(values: dict) -> dict:
    """The knob flags given, as config fields (``blocks`` as a pair)."""
    knobs = {}
    for name in ALL_KNOBS:
        field = name.replace("-", "_")
        if values.get(field) is not None:
            knobs[field] = tuple(values[field]) if field == "blocks" else values[field]
    return knobs
