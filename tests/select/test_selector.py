"""The single-shot selector: SLICER Eq. 3 + SLICER-SEARCH, its monotonicity, its answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slicer_compile.errors import ArtifactError, ConfigError
from slicer_compile.select import Conditions, Selector
from tests.select.synthetic import synthetic_selector

SELECTOR = synthetic_selector()


def depth(decision) -> int:
    return SELECTOR.splits[SELECTOR.ids.index(decision.split_id)].position if decision.feasible else -1


conditions = st.builds(
    Conditions,
    bandwidth_hz=st.sampled_from([1e6, 5e6, 10e6, 20e6]),
    deadline_s=st.floats(1e-3, 0.2),
    memory_bytes=st.floats(1e6, 2e7),
    epsilon=st.sampled_from([1e-2, 1e-3, 1e-4]),
    snr_db=st.floats(-5, 30),
    accuracy_budget=st.sampled_from([0.0, 0.005, 0.01, 0.03, 0.1]),
)


@given(conditions, st.floats(0.5, 15))
@settings(max_examples=300, deadline=None)
def test_worse_channel_never_chooses_a_deeper_split(c, drop_db):
    worse = Conditions(**{**c.__dict__, "snr_db": c.snr_db - drop_db})
    assert depth(SELECTOR.select(worse)) <= depth(SELECTOR.select(c))


@given(conditions, st.floats(0.1, 0.95))
@settings(max_examples=300, deadline=None)
def test_tighter_deadline_never_chooses_a_deeper_split(c, factor):
    tighter = Conditions(**{**c.__dict__, "deadline_s": c.deadline_s * factor})
    assert depth(SELECTOR.select(tighter)) <= depth(SELECTOR.select(c))


@given(conditions, st.floats(1.05, 10))
@settings(max_examples=300, deadline=None)
def test_looser_memory_never_chooses_a_shallower_split(c, factor):
    looser = Conditions(**{**c.__dict__, "memory_bytes": c.memory_bytes * factor})
    assert depth(SELECTOR.select(looser)) >= depth(SELECTOR.select(c))


@given(conditions, st.sampled_from([0.001, 0.01, 0.05, 0.2]))
@settings(max_examples=300, deadline=None)
def test_larger_accuracy_budget_never_lowers_sparsity_at_the_same_split(c, extra):
    base = SELECTOR.select(c)
    looser = SELECTOR.select(Conditions(**{**c.__dict__, "accuracy_budget": c.accuracy_budget + extra}))
    assert depth(looser) >= depth(base)
    if base.feasible and looser.split_id == base.split_id:
        assert looser.config.sparsity >= base.config.sparsity


def test_decision_contents_and_binding_constraints():
    loose = SELECTOR.select(Conditions(bandwidth_hz=20e6, snr_db=30, deadline_s=1.0, memory_bytes=1e9))
    assert loose.feasible and loose.split_id == "s0049" and loose.binding == "none"
    assert loose.config.sparsity == 0.5  # accuracy first: the lowest sparsity that fits
    assert loose.latency.total_s <= 1.0 and loose.payload_bits > 0
    assert loose.latency.edge_s == pytest.approx(1.5e-3 * 49)

    memory = SELECTOR.select(Conditions(bandwidth_hz=20e6, snr_db=30, deadline_s=1.0, memory_bytes=5e6))
    assert memory.feasible and memory.binding == "memory"
    assert depth(memory) == int((5e6 - 2e6) // 3e5)

    tight = SELECTOR.select(Conditions(bandwidth_hz=10e6, snr_db=10, deadline_s=60e-3, memory_bytes=1e9,
                                       accuracy_budget=0.03))
    assert tight.feasible and tight.binding == "deadline" and 0 < depth(tight) < 49
    assert tight.latency.total_s <= 60e-3
    trace = tight.trace
    assert trace[0]["split"] == "s0049" and trace[-1]["split"] == tight.split_id and trace[-1]["result"] == "fits"
    json.dumps(tight.as_dict())  # serialisable

    strict = SELECTOR.select(Conditions(bandwidth_hz=10e6, snr_db=10, deadline_s=60e-3, memory_bytes=1e9,
                                        accuracy_budget=0.01))
    assert depth(strict) <= depth(tight)


def test_infeasible_is_an_answer_with_a_reason():
    d = SELECTOR.select(Conditions(bandwidth_hz=1e5, snr_db=-5, deadline_s=1e-4, memory_bytes=1e9))
    assert not d.feasible and d.split_id is None and d.binding == "deadline" and "deadline" in d.reason
    d = SELECTOR.select(Conditions(bandwidth_hz=10e6, snr_db=10, deadline_s=1.0, memory_bytes=1e3))
    assert not d.feasible and d.binding == "memory"


def test_uncalibrated_selector_caps_sparsity_at_the_codec_default():
    sel = synthetic_selector(calibrated=False)
    decisions = [sel.select(Conditions(bandwidth_hz=1e6, snr_db=0, deadline_s=d, memory_bytes=1e9))
                 for d in (0.05, 0.1, 0.2, 0.5, 1.0)]
    assert any(d.feasible for d in decisions)
    assert all(d.config.sparsity <= 0.9 + 1e-6 for d in decisions if d.feasible)


@pytest.mark.parametrize("kwargs, message", [
    ({"bandwidth_hz": -1.0}, "bandwidth_hz must be a positive"),
    ({"epsilon": 1.0}, "epsilon must be in"),
    ({"epsilon": 0.0}, "epsilon must be in"),
    ({"deadline_s": 0.0}, "deadline_s must be a positive"),
    ({"snr": 3.0}, "give the SNR once"),
    ({"rate_bps": -5.0}, "rate must be"),
])
def test_bad_conditions_are_config_errors(kwargs, message):
    base = {"bandwidth_hz": 10e6, "snr_db": 10.0, "deadline_s": 0.05, "memory_bytes": 1e9}
    with pytest.raises(ConfigError, match=message):
        SELECTOR.select(Conditions(**{**base, **kwargs}))


def test_artifact_without_tables_is_rejected(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "splits": [], "codec": {}}))
    with pytest.raises(ArtifactError, match="lacks .artifact_id."):  # refused at load, in one place
        Selector.from_artifact(tmp_path)


def test_select_cli_on_a_compiled_artifact(tmp_path):
    from slicer_compile.compiler import compile_model
    from tests.models import EXAMPLES

    compile_model(EXAMPLES / "resnet_dag.onnx", device="jetson", out_dir=tmp_path / "out")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "slicer_compile.cli", "select", str(tmp_path / "out"), *args],
                              capture_output=True, text=True, timeout=300)

    result = cli("--bandwidth", "10MHz", "--snr-db", "10", "--epsilon", "1e-3", "--deadline", "50ms",
                 "--memory", "2GB", "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["feasible"] and decision["latency"]["total_s"] <= 0.05 and decision["trace"]
    fixed = cli("--bandwidth", "10MHz", "--snr-db", "10", "--deadline", "50ms", "--memory", "2GB", "--rate", "5Mbps")
    assert fixed.returncode == 0 and "rate 5.00 Mbit/s" in fixed.stdout
    for args, fragment in ((["--bandwidth", "-10MHz"], "must be positive"), (["--epsilon", "2"], "epsilon"),
                           (["--deadline", "5 fortnights"], "unknown unit")):
        base = {"--bandwidth": "10MHz", "--snr-db": "10", "--deadline": "50ms", "--memory": "2GB", "--epsilon": "1e-3"}
        base.update(dict(zip(args[::2], args[1::2])))
        bad = cli(*[x for kv in base.items() for x in kv])
        assert bad.returncode != 0 and fragment in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
