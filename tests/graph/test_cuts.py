"""Cut points on DAGs: the right crossing sets, never an invalid cut, and
edge + server reproducing the full model exactly at every offered cut."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from slicer_compile.backends.onnxrt import OnnxrtRunner
from slicer_compile.errors import ModelError
from slicer_compile.frontend import concretize, normalise
from slicer_compile.graph.cuts import check_separator, find_cuts
from slicer_compile.graph.partition import Partitioner
from tests.models import REGISTRY, branch_concat_model, make_model, masked_layers_model, residual_model


def cuts_of(model):
    return find_cuts(concretize(normalise(model)))


def test_branches_that_merge_only_cut_outside_the_branches():
    cuts = {c.id: [t.name for t in c.crossing] for c in cuts_of(branch_concat_model())}
    # Inside the branch pair two activations cross (b and c/rc): never offered.
    assert cuts == {"s0000": ["x"], "s0001": ["a"], "s0002": ["ra"], "s0006": ["cat"]}


def test_residual_block_interior_is_not_offered():
    cuts = {c.id: [t.name for t in c.crossing] for c in cuts_of(residual_model())}
    assert cuts == {"s0000": ["x"], "s0001": ["s"], "s0002": ["rs"], "s0006": ["sum"], "s0007": ["rsum"]}


def test_mask_feeding_every_layer_crosses_as_a_side_tensor():
    cuts = cuts_of(masked_layers_model())
    deep = [c for c in cuts if "s1" in c.crossing_names]
    assert deep, [c.crossing_names for c in cuts]
    for cut in deep:
        kinds = {t.name: t.kind for t in cut.crossing}
        assert kinds["s1"] == "activation" and kinds["bias"] == "side"
    # The very first cut sends the raw inputs; the integer mask is side.
    first = cuts[0]
    assert {t.name: t.kind for t in first.crossing} == {"x": "activation", "mask": "side"}


def test_check_separator_names_what_is_missing():
    model = normalise(residual_model())
    with pytest.raises(ModelError, match="not a valid cut: x would be needed"):
        check_separator(model, ["c2"], ["y"])  # inside the residual block: the skip is missing
    check_separator(model, ["sum"], ["y"])


def test_a_model_with_no_valid_cut_is_an_error():
    from onnx import TensorProto, helper

    one_node = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(ModelError, match="no valid cut"):
        cuts_of(one_node)


@pytest.mark.parametrize("entry", [pytest.param(e, marks=pytest.mark.slow) if e.slow else e for e in REGISTRY],
                         ids=[e.name for e in REGISTRY])
def test_edge_plus_server_reproduce_the_full_model_exactly(entry):
    model = normalise(entry.load())
    feeds = entry.feeds()
    cuts = find_cuts(concretize(model, {k: v.shape for k, v in feeds.items()}))
    assert len(cuts) >= 2
    with OnnxrtRunner(model) as full:
        expected = full.infer(feeds)
    partitioner = Partitioner(model)
    for cut in cuts:
        pair = partitioner.split(cut)
        with OnnxrtRunner(pair.edge) as edge, OnnxrtRunner(pair.server) as server:
            middle = edge.infer({i: feeds[i] for i in edge.input_names})
            assert set(middle) == set(cut.crossing_names)
            outputs = server.infer(middle)
        for name, value in expected.items():
            np.testing.assert_array_equal(outputs[name], value, err_msg=f"{entry.name} at {cut.id}")
        # The inverse of the cut: merging the parts gives a model with the same outputs.
        edge_part, server_part = onnx.ModelProto(), onnx.ModelProto()
        edge_part.CopyFrom(pair.edge)
        server_part.CopyFrom(pair.server)
        for part in (edge_part, server_part):
            del part.graph.value_info[:]  # optional, and merge_models rejects repeats
        # Both parts may compute the same constants: prefix the server's names.
        server_part = onnx.compose.add_prefix(server_part, "server/")
        merged = onnx.compose.merge_models(edge_part, server_part,
                                           io_map=[(n, f"server/{n}") for n in cut.crossing_names])
        with OnnxrtRunner(merged) as m:
            merged_outputs = m.infer({i: feeds[i] for i in m.input_names})
        for name, value in expected.items():
            np.testing.assert_array_equal(merged_outputs[f"server/{name}"], value)
