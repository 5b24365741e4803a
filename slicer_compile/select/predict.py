"""Predictors the selector uses before anything runs: the payload bound
``B̂_UB`` (from ``codec.predict_bits``) and the codec time ``ζ̂``.

``ζ̂`` is a lookup table from (elements, sparsity) to encode seconds, measured
per device with ``slicer-compile bench codec --json`` and interpolated
log-log in the element count and linearly in sparsity. The table shipped in
the package was measured on the development machine's CPU with the numpy
reference; measure on the target for real decisions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from slicer_compile.errors import ConfigError


@dataclass(frozen=True)
class CodecTimeTable:
    """Encode time of the SLICER codec by tensor size and sparsity."""

    device: str
    sparsities: np.ndarray  # ascending
    log_elements: tuple[np.ndarray, ...]  # per sparsity, ascending
    log_seconds: tuple[np.ndarray, ...]

    @staticmethod
    def from_rows(rows: list[dict], device: str = "") -> "CodecTimeTable":
        """Rows with ``elements``, ``sparsity`` and ``encode_s`` (or the benchmark's
        ``encode_melem_s``); rows of other codecs are ignored."""
        by_s: dict[float, list[tuple[float, float]]] = {}
        for row in rows:
            if row.get("codec", "slicer") != "slicer" or row.get("sparsity") is None:
                continue
            seconds = row.get("encode_s") or row["elements"] / (row["encode_melem_s"] * 1e6)
            by_s.setdefault(round(float(row["sparsity"]), 4), []).append((float(row["elements"]), float(seconds)))
        if not by_s:
            raise ConfigError("codec time table has no SLICER rows")
        sparsities = np.array(sorted(by_s))
        log_e, log_t = [], []
        for s in sparsities:
            pts = sorted(by_s[s])
            log_e.append(np.log([p[0] for p in pts]))
            log_t.append(np.log([p[1] for p in pts]))
        return CodecTimeTable(device, sparsities, tuple(log_e), tuple(log_t))

    @staticmethod
    def load(path: str | Path | None = None) -> "CodecTimeTable":
        """A table from a ``bench codec --json`` file, or the packaged default."""
        try:
            if path is None:
                data = json.loads(resources.files("slicer_compile.select").joinpath("codec_times.json").read_text())
            else:
                data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read codec time table {path}: {exc}") from None
        if isinstance(data, dict):
            return CodecTimeTable.from_rows(data["rows"], data.get("device", ""))
        return CodecTimeTable.from_rows(data, str(path))

    def encode_seconds(self, elements: float, sparsity: float) -> float:
        """Predicted encode time; extrapolates along the measured log-log slope."""
        per_s = [self._at(i, np.log(max(elements, 1.0))) for i in range(len(self.sparsities))]
        return float(np.exp(np.interp(sparsity, self.sparsities, per_s)))

    def _at(self, i: int, log_elements: float) -> float:
        xs, ys = self.log_elements[i], self.log_seconds[i]
        if log_elements <= xs[0]:
            return float(ys[0])  # below the smallest size measured, the fixed cost dominates
        if log_elements > xs[-1]:
            slope = 1.0 if len(xs) == 1 else (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            return float(ys[-1] + slope * (log_elements - xs[-1]))
        return float(np.interp(log_elements, xs, ys))
