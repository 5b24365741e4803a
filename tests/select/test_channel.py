"""Channel formulas against hand-computed values at the papers' setting
(ε = 0.001, W = 10 MHz, γ = 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slicer_compile.errors import ConfigError
from slicer_compile.select.channel import (
    best_rate,
    outage_latency,
    outage_probability,
    seconds_per_bit,
    snr_from_db,
    transmissions,
)
from slicer_compile.select.units import parse_quantity

W, GAMMA, EPS = 10e6, 10.0, 1e-3


def test_outage_probability_by_hand():
    # R = W: 2^1 - 1 = 1, so P_o = 1 - e^(-1/10)
    assert outage_probability(10e6, W, GAMMA) == pytest.approx(1 - math.exp(-0.1), rel=1e-12)
    # R = 2W: (4 - 1)/10 = 0.3
    assert outage_probability(20e6, W, GAMMA) == pytest.approx(1 - math.exp(-0.3), rel=1e-12)
    assert snr_from_db(10.0) == pytest.approx(10.0)


def test_transmissions_and_latency_by_hand():
    # ln(0.001)/ln(0.0951626) = 2.9368 -> 3 transmissions; 1 Mbit at 10 Mbit/s = 0.1 s each
    assert transmissions(10e6, W, GAMMA, EPS) == 3
    assert outage_latency(1e6, 10e6, W, GAMMA, EPS) == pytest.approx(0.3)
    # ln(0.001)/ln(0.259182) = 5.1127 -> 6 transmissions at 20 Mbit/s
    assert transmissions(20e6, W, GAMMA, EPS) == 6
    assert outage_latency(1e6, 20e6, W, GAMMA, EPS) == pytest.approx(0.3)
    assert seconds_per_bit(10e6, W, GAMMA, EPS) == pytest.approx(3 / 10e6)


def test_best_rate_is_the_five_transmission_boundary_and_beats_a_fine_grid():
    rate, latency = best_rate(1e6, W, GAMMA, EPS, 1e4, 100e6)
    # R_5 = W log2(1 - γ ln(1 - ε^(1/5))) = 19.6076 Mbit/s, with 5 transmissions
    expected = W * math.log2(1 - GAMMA * math.log(1 - EPS ** 0.2))
    assert rate == pytest.approx(expected, rel=1e-9)
    assert latency == pytest.approx(5e6 / expected, rel=1e-9)
    grid = np.linspace(1e4, 100e6, 20_001)
    assert latency <= min(outage_latency(1e6, r, W, GAMMA, EPS) for r in grid) + 1e-12


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 25.0])
def test_best_rate_is_minimal_on_a_grid_across_snr(snr_db):
    g = snr_from_db(snr_db)
    lo, hi = 1e3, W * math.log2(1 + 1000 * g)
    rate, latency = best_rate(1.0, W, g, EPS, lo, hi)
    grid = np.geomspace(lo, hi, 5000)
    assert latency <= min(outage_latency(1.0, r, W, g, EPS) for r in grid) * (1 + 1e-9)


def test_worse_snr_means_slower_delivery():
    latencies = [best_rate(1e6, W, snr_from_db(db), EPS, 1e3, 1e9)[1] for db in range(-10, 31, 5)]
    assert latencies == sorted(latencies, reverse=True)


@pytest.mark.parametrize("call", [
    lambda: outage_probability(1e6, -10e6, GAMMA),
    lambda: outage_probability(1e6, W, 0.0),
    lambda: transmissions(1e6, W, GAMMA, 1.5),
    lambda: transmissions(1e6, W, GAMMA, 0.0),
    lambda: outage_latency(-1, 1e6, W, GAMMA, EPS),
    lambda: best_rate(1, W, GAMMA, EPS, 5e6, 1e6),
])
def test_bad_channel_input_is_a_config_error(call):
    with pytest.raises(ConfigError):
        call()


def test_units():
    assert parse_quantity("10MHz", "frequency") == 10e6
    assert parse_quantity("50ms", "time") == pytest.approx(0.05)
    assert parse_quantity("2GB", "bytes") == 2e9 and parse_quantity("1GiB", "bytes") == 2**30
    assert parse_quantity("20Mbps", "rate") == 20e6 and parse_quantity("3.5e3", "time") == 3500
    for text, kind, message in (("10 furlongs", "time", "unknown unit"), ("-5MHz", "frequency", "positive"),
                                ("abc", "bytes", "cannot read")):
        with pytest.raises(ConfigError, match=message):
            parse_quantity(text, kind)
