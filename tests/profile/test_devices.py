"""Device catalogue, the roofline, fitting, per-node costs and the measured profile."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.errors import DeviceError
from slicer_compile.frontend import concretize, load_onnx, normalise
from slicer_compile.profile.costs import NodeCost, node_costs
from slicer_compile.profile.devices import fit_device, get_device, known_devices
from slicer_compile.profile.measure import Profile, measure_profile
from tests.models import EXAMPLES, residual_model


def test_catalogue_has_the_targets_and_the_alias():
    for name in ("jetson", "orin-nano", "orin-nx", "agx-orin", "xavier-nx", "a100", "h100", "l4", "cpu"):
        assert name in known_devices()
    jetson = get_device("jetson")
    assert jetson.name == "orin-nano" and jetson.memory_bytes == 8 * 2**30 and jetson.memory_bandwidth == 68e9
    h100 = get_device("h100")
    assert h100.peak_flops > get_device("a100").peak_flops > get_device("l4").peak_flops
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        get_device("tpu")


def test_roofline_is_the_max_of_compute_and_memory_plus_overhead():
    spec = get_device("a100")
    flops, moved = 1e12, 1e6
    expected = max(flops / (spec.peak_flops * spec.compute_efficiency),
                   moved / (spec.memory_bandwidth * spec.memory_efficiency)) + spec.node_overhead_s
    assert spec.node_latency_s(flops, moved) == pytest.approx(expected)


def test_fit_recovers_known_efficiencies():
    spec = get_device("orin-nano")
    rng = np.random.default_rng(0)
    costs = [NodeCost(f"n{i}", "Conv", float(f), int(b), 0, 0)
             for i, (f, b) in enumerate(zip(rng.uniform(1e6, 1e9, 200), rng.uniform(1e4, 1e8, 200)))]
    truth = type(spec)(**{**spec.as_dict(), "compute_efficiency": 0.12, "memory_efficiency": 0.4,
                          "node_overhead_s": 2e-5})
    fitted = fit_device(spec, costs, truth.predict(costs))
    assert fitted.compute_efficiency == pytest.approx(0.12, rel=0.05)
    assert fitted.memory_efficiency == pytest.approx(0.4, rel=0.05)
    assert np.abs(fitted.predict(costs) - truth.predict(costs)).sum() / truth.predict(costs).sum() < 0.02


def test_node_costs_count_conv_macs_and_weights_once():
    model = concretize(normalise(residual_model()))
    costs = {c.name: c for c in node_costs(model)}
    # stem: 8 output channels x 8 x 8 positions, 3 input channels x 3 x 3 kernel, 2 FLOPs per MAC
    assert costs["stem"].flops == 2 * 8 * 8 * 8 * 3 * 3 * 3
    assert costs["stem"].weight_bytes == 8 * 3 * 3 * 3 * 4
    assert costs["add"].flops == 8 * 8 * 8 and costs["add"].weight_bytes == 0


def test_measured_profile_has_every_node_and_round_trips(tmp_path):
    model = concretize(load_onnx(EXAMPLES / "resnet_dag.onnx"))
    prof = measure_profile(model, warmup=1, runs=3)
    conv_nodes = [n for n in prof.nodes if n.op_type == "Conv"]
    assert conv_nodes and all(n.latency_s > 0 for n in conv_nodes)
    assert prof.total_latency_s >= 0.5 * sum(n.latency_s for n in prof.nodes)
    prof.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json") == prof
