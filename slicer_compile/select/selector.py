"""The runtime split selector: which split and which codec knobs, for this channel,
deadline, memory and accuracy budget (SLICER Eq. 3 with SLICER-SEARCH).

Single shot: the deepest split with ``L_d + ζ̂ + L_c ≤ D`` and ``m + m_buf ≤ M``.
Within a split the knobs follow SLICER-SEARCH, accuracy first:

* tier 1 — tune ``M+ = M-`` (most blocks first: finer quantisation ranges);
* tier 2 — raise the sparsity along the calibrated grid, never past the largest
  whose measured fidelity stays within the accuracy budget;
* tier 3 — retreat to the next shallower split.

Everything a query needs is tabulated when the selector is built (payload
bounds and codec times per split × sparsity × block count), so a query is a
few vectorised comparisons: cheap enough to ask per request.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slicer_compile.codec import SlicerConfig, predict_bits
from slicer_compile.errors import ArtifactError, ConfigError
from slicer_compile.select.channel import best_rate, snr_from_db, transmissions
from slicer_compile.select.predict import CodecTimeTable

#: Block counts tier 1 tries, most (finest quantisation) first.
BLOCK_OPTIONS = (8, 6, 4, 3, 2, 1)


@dataclass(frozen=True)
class Conditions:
    """What a query knows about this request.

    Args:
        bandwidth_hz: channel bandwidth W.
        snr_db / snr: average SNR γ, in dB or linear (give one).
        epsilon: target outage probability ε.
        deadline_s: end-to-end budget D for edge compute + encode + transmission.
        memory_bytes: edge memory budget M.
        rate_bps: a fixed rate; None searches [rate_min_bps, rate_max_bps].
        accuracy_budget: fidelity drop allowed (0.01 = stay within 1 point of
            the uncompressed model's output agreement).
    """

    bandwidth_hz: float
    deadline_s: float
    memory_bytes: float
    epsilon: float = 1e-3
    snr_db: float | None = None
    snr: float | None = None
    rate_bps: float | None = None
    rate_min_bps: float = 1e3
    rate_max_bps: float | None = None
    accuracy_budget: float = 0.01

    def linear_snr(self) -> float:
        if (self.snr_db is None) == (self.snr is None):
            raise ConfigError("give the SNR once: snr_db or snr (linear)")
        return snr_from_db(self.snr_db) if self.snr_db is not None else float(self.snr)

    def validate(self) -> None:
        for name in ("bandwidth_hz", "deadline_s", "memory_bytes"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not 0.0 < self.epsilon < 1.0:
            raise ConfigError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if not 0.0 <= self.accuracy_budget <= 1.0:
            raise ConfigError(f"accuracy budget must be in [0, 1], got {self.accuracy_budget}")
        if self.rate_bps is not None and not (math.isfinite(self.rate_bps) and self.rate_bps > 0):
            raise ConfigError(f"rate must be a positive number of bit/s, got {self.rate_bps}")
        snr = self.linear_snr()
        if not (math.isfinite(snr) and snr > 0):
            raise ConfigError(f"SNR must be positive, got {snr}")


@dataclass(frozen=True)
class LatencyBreakdown:
    edge_s: float
    codec_s: float
    transmit_s: float
    #: transmissions the ε-outage target budgets for (transmit_s counts all of them)
    transmissions: int = 1

    @property
    def total_s(self) -> float:
        return self.edge_s + self.codec_s + self.transmit_s

    def as_dict(self) -> dict:
        return {"edge_s": self.edge_s, "codec_s": self.codec_s, "transmit_s": self.transmit_s,
                "transmissions": self.transmissions, "total_s": self.total_s}


@dataclass
class Decision:
    """The answer to a query; infeasible is an answer, with the reason."""

    feasible: bool
    split_id: str | None
    config: SlicerConfig | None
    rate_bps: float
    latency: LatencyBreakdown | None
    payload_bits: int | None
    binding: str  # "none", "deadline", "memory", "accuracy" or "channel"
    reason: str
    _trace_source: tuple | None = field(default=None, repr=False)
    #: splits deeper than the chosen one (all of them when infeasible) ruled out, per constraint
    excluded: dict = field(default_factory=dict)
    #: calibrated fidelity of the chosen split and sparsity (None where not measured)
    fidelity: float | None = None

    @property
    def trace(self) -> list[dict]:
        """The tiers tried, deepest split first, up to the chosen one (built on demand)."""
        if self._trace_source is None:
            return []
        selector, query = self._trace_source
        return selector._trace(query, self.split_id)

    def as_dict(self) -> dict:
        return {
            "feasible": self.feasible, "split_id": self.split_id,
            "config": None if self.config is None else self.config.as_dict(),
            "rate_bps": self.rate_bps, "latency": None if self.latency is None else self.latency.as_dict(),
            "payload_bits": self.payload_bits, "binding": self.binding, "excluded": dict(self.excluded),
            "fidelity": self.fidelity, "reason": self.reason, "trace": self.trace,
        }


@dataclass(frozen=True)
class _Query:
    latency: np.ndarray  # (splits, sparsities, blocks)
    ok_memory: np.ndarray  # (splits,)
    ok_accuracy: np.ndarray  # (splits, sparsities)
    seconds_per_bit: float
    deadline_s: float
    transmissions: int


class Selector:
    """Answers :class:`Conditions` for one artifact's split table."""

    def __init__(self, splits: list, codec_defaults: dict, sparsities: list[float], min_sparsity: float = 0.0,
                 max_blocks: int = max(BLOCK_OPTIONS), codec_times: CodecTimeTable | None = None,
                 calibrated: bool = True, uncalibrated_max_sparsity: float | None = None):
        if not splits:
            raise ArtifactError("the artifact has no split table to select from")
        base = SlicerConfig.from_dict(codec_defaults)
        self.calibrated = calibrated
        grid = sorted({float(np.float32(s)) for s in sparsities if s >= min_sparsity - 1e-9})
        if not grid:
            raise ArtifactError("no sparsity of the artifact's grid fits its encoder nodes")
        self.sparsities = np.array(grid)
        self.blocks = tuple(b for b in BLOCK_OPTIONS if b <= max_blocks) or (1,)
        self.configs = [[dataclasses.replace(base, sparsity=s, blocks=(b, b)) for b in self.blocks] for s in grid]
        times = codec_times or CodecTimeTable.load()
        # Deepest first: the order SLICER Eq. 3 scans.
        self.splits = sorted(splits, key=lambda s: -s.position)
        n, ns, nb = len(self.splits), len(grid), len(self.blocks)
        self.ids = [s.id for s in self.splits]
        self.edge_s = np.array([s.edge_latency_s for s in self.splits])
        self.memory = np.array([s.edge_memory_bytes for s in self.splits], dtype=np.float64)
        self.bits = np.zeros((n, ns, nb))
        self.codec_s = np.zeros((n, ns))
        self.fidelity = np.full((n, ns), np.nan)
        for i, split in enumerate(self.splits):
            side_bits = 8 * sum(t.nbytes for t in split.crossing if t.kind == "side")
            for j, s in enumerate(grid):
                for k in range(nb):
                    cfg = self.configs[j][k]
                    self.bits[i, j, k] = side_bits + sum(predict_bits(tuple(t.shape), cfg)
                                                         for t in split.activations)
                self.codec_s[i, j] = sum(times.encode_seconds(math.prod(t.shape), s) for t in split.activations)
                value = split.fidelity_at(s)
                if value is not None:
                    self.fidelity[i, j] = value
        # Without calibration the fidelity is unknown: sparsities up to the codec's
        # default (or the given cap) are allowed, and decisions say so.
        self._defaults = dict(codec_defaults)
        cap = uncalibrated_max_sparsity if uncalibrated_max_sparsity is not None else base.sparsity
        self.uncalibrated_ok = self.sparsities <= cap + 1e-9

    @staticmethod
    def from_artifact(path, codec_times: str | Path | CodecTimeTable | None = None,
                      splits: list | None = None) -> "Selector":
        """A selector over an artifact's split table (or the given splits of it)."""
        from slicer_compile.artifact import Artifact, load_artifact

        artifact = path if isinstance(path, Artifact) else load_artifact(path)
        if not artifact.splits:
            raise ArtifactError(f"{artifact.path}: the manifest has no split table to select from")
        codec = artifact.codec
        times = codec_times if isinstance(codec_times, CodecTimeTable) else CodecTimeTable.load(codec_times)
        return Selector(splits if splits is not None else artifact.splits, codec.defaults.as_dict(),
                        list(codec.sparsity_grid), min_sparsity=codec.min_sparsity, max_blocks=codec.max_blocks,
                        codec_times=times, calibrated=artifact.calibration.measured)

    # --- queries -------------------------------------------------------------------

    def _query(self, c: Conditions) -> tuple[_Query, float]:
        c.validate()
        snr = c.linear_snr()
        if c.rate_bps is not None:
            rate = float(c.rate_bps)
        else:
            rate_max = c.rate_max_bps or c.bandwidth_hz * math.log2(1.0 + 1000.0 * snr)
            rate, _ = _cached_best_rate(c.bandwidth_hz, snr, c.epsilon, c.rate_min_bps, rate_max)
        count = transmissions(rate, c.bandwidth_hz, snr, c.epsilon)
        spb = count / rate
        latency = self.edge_s[:, None, None] + self.codec_s[:, :, None] + self.bits * spb
        ok_memory = self.memory <= c.memory_bytes
        if self.calibrated:
            # Tier 2 never raises s past the first grid point whose fidelity leaves
            # the budget: the allowed sparsities are a prefix of the grid, so a
            # larger budget only ever adds sparsities above those allowed before.
            within = self.fidelity >= 1.0 - c.accuracy_budget - 1e-12
            ok_accuracy = np.logical_and.accumulate(within, axis=1)
        else:
            ok_accuracy = np.broadcast_to(self.uncalibrated_ok, self.fidelity.shape)
        count = int(count) if math.isfinite(count) else 0
        return _Query(latency, ok_memory, ok_accuracy, spb, c.deadline_s, count), rate

    def select(self, c: Conditions) -> Decision:
        """The deepest feasible split and its knobs, or why there is none."""
        q, rate = self._query(c)
        ok = (q.latency <= c.deadline_s) & q.ok_accuracy[:, :, None] & q.ok_memory[:, None, None]
        any_ok = ok.reshape(len(self.ids), -1).any(axis=1)
        if not any_ok.any():
            excluded = self._exclusions(q, len(self.ids))
            binding = _binding(excluded)
            _, why = self._why_not(q, c, len(self.ids) - 1)
            return Decision(False, None, None, rate, None, None, binding,
                            f"no split meets the constraints: {_counts_text(excluded)} "
                            f"(shallowest, {self.ids[-1]}: {why})", (self, q), excluded)
        i = int(np.argmax(any_ok))  # deepest feasible (splits are deepest first)
        j, k = (int(v) for v in np.argwhere(ok[i])[0])  # lowest sparsity, then most blocks
        excluded = self._exclusions(q, i)
        if i == 0:
            binding, why = "none", "the deepest split fits"
        else:
            binding = _binding(excluded)
            _, deeper = self._why_not(q, c, i - 1)
            why = f"{_counts_text(excluded)} deeper split(s); {self.ids[i - 1]} (next deeper): {deeper}"
        breakdown = LatencyBreakdown(float(self.edge_s[i]), float(self.codec_s[i, j]),
                                     float(self.bits[i, j, k] * q.seconds_per_bit), q.transmissions)
        fidelity = float(self.fidelity[i, j]) if np.isfinite(self.fidelity[i, j]) else None
        return Decision(True, self.ids[i], self.configs[j][k], rate, breakdown, int(self.bits[i, j, k]), binding,
                        why, (self, q), excluded, fidelity)

    def choose_within_budget(self, accuracy_budget: float = 0.01) -> Decision:
        """Without a channel or deadline: the deepest split, at the highest sparsity whose
        calibrated fidelity stays within ``accuracy_budget`` (the fewest bytes at the
        stated fidelity). Uncalibrated: the deepest split at the codec's default sparsity.
        Where nothing is within the budget, the most faithful (split, sparsity) measured."""
        default = int(np.argmin(np.abs(self.sparsities - SlicerConfig.from_dict(self._defaults).sparsity)))
        k = 0  # most blocks
        if not self.calibrated or np.isnan(self.fidelity).all():
            return Decision(True, self.ids[0], self.configs[default][k], 0.0, None, int(self.bits[0, default, k]),
                            "none", "the deepest split at the default sparsity; fidelity unknown (compiled "
                            "without --calib)", None)
        within = np.logical_and.accumulate(self.fidelity >= 1.0 - accuracy_budget - 1e-12, axis=1)
        for i in range(len(self.ids)):
            allowed = np.flatnonzero(within[i])
            if allowed.size:
                j = int(allowed[-1])
                return Decision(True, self.ids[i], self.configs[j][k], 0.0, None, int(self.bits[i, j, k]), "accuracy",
                                f"the deepest split within the accuracy budget {accuracy_budget:g}, at the highest "
                                "sparsity that stays within it", None, fidelity=float(self.fidelity[i, j]))
        i, j = np.unravel_index(int(np.nanargmax(self.fidelity)), self.fidelity.shape)
        return Decision(True, self.ids[i], self.configs[j][k], 0.0, None, int(self.bits[i, j, k]), "accuracy",
                        f"no split stays within the accuracy budget {accuracy_budget:g}: the most faithful one "
                        "measured", None, fidelity=float(self.fidelity[i, j]))

    def _exclusions(self, q: _Query, upto: int) -> dict[str, int]:
        """How many of the first ``upto`` splits (deepest first) each constraint rules out:
        memory first (no knob helps), then accuracy (a knob fast enough exists, but only
        beyond the accuracy budget), else the deadline."""
        if not math.isfinite(q.seconds_per_bit):
            return {"channel": upto} if upto else {}
        counts: dict[str, int] = {}
        for i in range(upto):
            if not q.ok_memory[i]:
                reason = "memory"
            elif ((q.latency[i] <= q.deadline_s) & q.ok_accuracy[i][:, None]).any():
                continue  # feasible (only possible past the chosen split)
            elif (q.latency[i] <= q.deadline_s).any():
                reason = "accuracy"
            else:
                reason = "deadline"
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    def _why_not(self, q: _Query, c: Conditions, i: int) -> tuple[str, str]:
        """Which constraint rules out split i."""
        if not math.isfinite(q.seconds_per_bit):
            return "channel", "the channel cannot deliver at this rate (outage probability rounds to 1)"
        if not q.ok_memory[i]:
            return "memory", f"needs {self.memory[i] / 2**20:.1f} MiB of edge memory, budget {c.memory_bytes / 2**20:.1f} MiB"
        fast_enough = (q.latency[i] <= c.deadline_s).any(axis=1)
        if fast_enough.any():
            return "accuracy", "only sparsities beyond the accuracy budget meet the deadline"
        return "deadline", f"at best {q.latency[i].min() * 1e3:.2f} ms, deadline {c.deadline_s * 1e3:.2f} ms"

    def _trace(self, q: _Query, chosen: str | None) -> list[dict]:
        steps = []
        for i, split_id in enumerate(self.ids):
            if not q.ok_memory[i]:
                steps.append({"split": split_id, "tier": 3, "result": "memory"})
            else:
                for j, s in enumerate(self.sparsities):
                    tier = 1 if j == 0 else 2
                    if not q.ok_accuracy[i, j]:
                        steps.append({"split": split_id, "tier": 2, "sparsity": float(s), "result": "accuracy"})
                        break
                    k = int(np.argmin(q.latency[i, j]))
                    best = float(q.latency[i, j, k])
                    fits = np.flatnonzero(q.latency[i, j] <= q.deadline_s)
                    steps.append({"split": split_id, "tier": tier, "sparsity": float(s),
                                  "blocks": self.blocks[int(fits[0])] if fits.size else self.blocks[k],
                                  "latency_s": float(q.latency[i, j, fits[0]]) if fits.size else best,
                                  "result": "fits" if fits.size else "deadline"})
                    if fits.size:
                        break
            if split_id == chosen:
                break
        return steps

    def sweep(self, base: Conditions, snr_db: list[float], deadlines_s: list[float]) -> list[dict]:
        """Decisions over a grid of SNR and deadline, like the papers' figures."""
        rows = []
        for d in deadlines_s:
            for snr in snr_db:
                c = Conditions(**{**base.__dict__, "snr_db": snr, "snr": None, "deadline_s": d})
                decision = self.select(c)
                rows.append({"snr_db": snr, "deadline_s": d, "feasible": decision.feasible,
                             "split_id": decision.split_id,
                             "depth": self.ids.index(decision.split_id) if decision.feasible else None,
                             "position": self.splits[self.ids.index(decision.split_id)].position if decision.feasible else None,
                             "sparsity": decision.config.sparsity if decision.config else None,
                             "latency_s": decision.latency.total_s if decision.latency else None,
                             "binding": decision.binding})
        return rows


#: Order in which ties between constraints are named (the hardest to change first).
_CONSTRAINTS = ("channel", "memory", "accuracy", "deadline")


def _binding(excluded: dict[str, int]) -> str:
    """The constraint that removed the most candidates on the way to the answer."""
    if not excluded:
        return "none"
    return max(_CONSTRAINTS, key=lambda name: (excluded.get(name, 0), -_CONSTRAINTS.index(name)))


def _counts_text(excluded: dict[str, int]) -> str:
    return ", ".join(f"{name} excluded {excluded[name]}" for name in _CONSTRAINTS if excluded.get(name))


_RATE_CACHE: dict = {}


def _cached_best_rate(bandwidth_hz: float, snr: float, epsilon: float, rate_min: float, rate_max: float):
    """The best rate depends only on the channel, not the payload: cache it per channel."""
    key = (bandwidth_hz, snr, epsilon, rate_min, rate_max)
    hit = _RATE_CACHE.get(key)
    if hit is None:
        if len(_RATE_CACHE) > 4096:
            _RATE_CACHE.clear()
        hit = _RATE_CACHE[key] = best_rate(1.0, bandwidth_hz, snr, epsilon, rate_min, rate_max)
    return hit
