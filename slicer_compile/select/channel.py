"""The wireless channel of both papers: outage probability, ε-outage latency, best rate.

    P_o(R)  = 1 - exp(-(2^(R/W) - 1) / γ)                       (SLICER Eq. 1; Sung Eq. 10)
    L_c     = B / R · ceil(ln ε / ln P_o(R))                     (SLICER Eq. 1 without ζ; Sung Eq. 9)

The ceiling counts transmissions: enough that all of them failing has
probability at most ε. ``best_rate`` minimises ``L_c`` itself over a rate
interval (Sung et al. minimise their g(R), a proxy that drops the ceiling). For
a fixed number of transmissions n, ``L_c`` falls as R grows, so the optimum
sits at the largest rate that still needs only n transmissions,
``R_n = W·log2(1 - γ·ln(1 - ε^(1/n)))``, or at the interval's upper end: the
search evaluates exactly those candidates.
"""

from __future__ import annotations

import math

import numpy as np

from slicer_compile.errors import ConfigError

#: Transmissions considered at most; past this the link is useless.
MAX_TRANSMISSIONS = 10_000


def snr_from_db(snr_db: float) -> float:
    """Linear SNR γ from decibels."""
    return 10.0 ** (snr_db / 10.0)


def _check(rate_bps: float | None, bandwidth_hz: float, snr: float, epsilon: float | None = None) -> None:
    if not (math.isfinite(bandwidth_hz) and bandwidth_hz > 0):
        raise ConfigError(f"bandwidth must be a positive number of Hz, got {bandwidth_hz}")
    if not (math.isfinite(snr) and snr > 0):
        raise ConfigError(f"SNR must be positive (linear), got {snr}")
    if rate_bps is not None and not (math.isfinite(rate_bps) and rate_bps > 0):
        raise ConfigError(f"rate must be a positive number of bit/s, got {rate_bps}")
    if epsilon is not None and not 0.0 < epsilon < 1.0:
        raise ConfigError(f"epsilon must be in (0, 1), got {epsilon}")


def outage_probability(rate_bps: float, bandwidth_hz: float, snr: float) -> float:
    """``P_o(R) = 1 - exp(-(2^(R/W) - 1)/γ)`` for a linear SNR γ."""
    _check(rate_bps, bandwidth_hz, snr)
    return -math.expm1(-math.expm1(rate_bps / bandwidth_hz * math.log(2.0)) / snr)


def transmissions(rate_bps: float, bandwidth_hz: float, snr: float, epsilon: float) -> float:
    """``ceil(ln ε / ln P_o(R))``: transmissions for outage ≤ ε (inf if P_o rounds to 1)."""
    _check(rate_bps, bandwidth_hz, snr, epsilon)
    p_out = outage_probability(rate_bps, bandwidth_hz, snr)
    if p_out <= 0.0:
        return 1.0
    if p_out >= 1.0:
        return math.inf
    # A hair below the exact ratio guards the ceiling against rounding up an integer.
    return float(max(1, math.ceil(math.log(epsilon) / math.log(p_out) - 1e-9)))


def outage_latency(bits: float, rate_bps: float, bandwidth_hz: float, snr: float, epsilon: float) -> float:
    """``B/R · ceil(ln ε / ln P_o(R))`` seconds (SLICER Eq. 1 without ζ)."""
    if bits < 0:
        raise ConfigError(f"payload bits must be >= 0, got {bits}")
    n = transmissions(rate_bps, bandwidth_hz, snr, epsilon)
    return 0.0 if bits == 0 else bits / rate_bps * n


def best_rate(bits: float, bandwidth_hz: float, snr: float, epsilon: float, rate_min: float,
              rate_max: float) -> tuple[float, float]:
    """The rate in ``[rate_min, rate_max]`` minimising the ε-outage latency.

    Returns:
        (rate in bit/s, latency in seconds). The rate does not depend on ``bits``.
    """
    _check(rate_min, bandwidth_hz, snr, epsilon)
    _check(rate_max, bandwidth_hz, snr, epsilon)
    if rate_min > rate_max:
        raise ConfigError(f"rate interval is empty: [{rate_min}, {rate_max}]")
    candidates = [rate_min, rate_max]
    # R_n for n = 1, 2, …: n/R_n falls, then rises (R_n grows like log n), so a
    # first block of n usually holds the optimum; extend while it sits at the edge.
    count = 64
    while True:
        n = np.arange(1, count + 1, dtype=np.float64)
        rates = bandwidth_hz * np.log2(1.0 - snr * np.log1p(-(epsilon ** (1.0 / n))))
        inside = (rates >= rate_min) & (rates <= rate_max)
        if inside.any():
            cost = np.where(inside, n / rates, np.inf)
            i = int(np.argmin(cost))
            candidates.append(float(rates[i]))
            at_edge = i == count - 1 and rates[-1] < rate_max
        else:
            at_edge = rates[-1] < rate_min
        if not at_edge or count >= MAX_TRANSMISSIONS:
            break
        count = min(4 * count, MAX_TRANSMISSIONS)
    best = min(candidates, key=lambda r: (transmissions(r, bandwidth_hz, snr, epsilon) / r, -r))
    return best, outage_latency(bits, best, bandwidth_hz, snr, epsilon)


def seconds_per_bit(rate_bps: float, bandwidth_hz: float, snr: float, epsilon: float) -> float:
    """``L_c / B`` at a given rate: the ε-outage latency is linear in the payload."""
    return transmissions(rate_bps, bandwidth_hz, snr, epsilon) / rate_bps
