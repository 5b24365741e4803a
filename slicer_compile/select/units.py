"""Quantities with units, as the CLI takes them: ``10MHz``, ``50ms``, ``2GB``, ``20Mbps``."""

from __future__ import annotations

import math
import re

from slicer_compile.errors import ConfigError

_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_UNITS = {
    "frequency": {"Hz": 1.0},
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9},
    "bytes": {"B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 2.0**10, "MiB": 2.0**20,
              "GiB": 2.0**30, "TiB": 2.0**40, "kB": 1e3},
    "rate": {"bps": 1.0, "bit/s": 1.0},
}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ/]*)\s*$")


def parse_quantity(text: str, kind: str, require_unit: bool = False) -> float:
    """``"10MHz"`` -> 1e7 for kind "frequency"; a bare number is in the base unit,
    or refused with ``require_unit`` (what the command line asks for).

    Raises:
        ConfigError: an unknown unit or a malformed number.
    """
    if str(text).strip().startswith("-"):
        raise ConfigError(f"a {kind} must be positive, got {text!r}")
    match = _NUMBER.match(str(text))
    if not match:
        raise ConfigError(f"cannot read {text!r} as a {kind}")
    value, unit = float(match.group(1)), match.group(2)
    units = _UNITS[kind]
    if unit == "" and require_unit:
        raise ConfigError(f"{text!r} needs a unit ({', '.join(units)})")
    if unit == "":
        scale = 1.0
    elif unit in units:
        scale = units[unit]
    elif kind in ("frequency", "rate") and unit[:1] in _PREFIX and unit[1:] in units:
        scale = _PREFIX[unit[:1]] * units[unit[1:]]
    else:
        known = ", ".join(units)
        raise ConfigError(f"unknown unit {unit!r} in {text!r} for a {kind} (use {known}, with k/M/G prefixes for Hz and bps)")
    result = value * scale
    if not math.isfinite(result):
        raise ConfigError(f"{text!r} is not a finite {kind}")
    return result
