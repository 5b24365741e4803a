"""Rate-distortion of the codec menu against the five-line baselines (`bench rd`)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from slicer_compile.codec.rd import best_within, measure, summary
from tests.models import EXAMPLES


def test_on_a_large_dense_tensor_the_menu_beats_every_baseline_from_two_bits():
    x = np.random.default_rng(0).standard_normal((1, 1, 1 << 14)).astype(np.float32)
    points = measure({"gauss": [x]})
    rows = {r["budget"]: r for r in summary(points)}
    for budget in (2.0, 4.0, 8.0):
        assert rows[budget]["menu"].startswith("dense") and rows[budget]["menu_over_baseline"] < 1.0, rows[budget]
    # Every point stays within the budget it is reported at.
    best = best_within(points, "gauss", ("slicer",), 1.0)
    assert best is not None and best.bits_per_element <= 1.0 and 0 < best.relative_mse < 1


def test_bench_rd_reads_a_model_and_reports_every_budget():
    result = subprocess.run([sys.executable, "-m", "slicer_compile.cli", "bench", "rd", str(EXAMPLES / "digits_cnn.onnx"),
                             "--calib", str(EXAMPLES / "digits_calib.npz"), "--samples", "1", "--tensors", "1",
                             "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["budget"] for r in report["summary"]] == [0.5, 1.0, 2.0, 4.0, 8.0]
    families = {p["family"] for p in report["points"]}
    assert {"slicer", "tabq", "dense", "float16", "int8", "uniform + zstd"} <= families
