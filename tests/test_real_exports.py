"""Models with the properties of third-party exports (symbolic image sizes, a static
batch, model metadata, embedding / dense-map / per-token outputs): the split table
describes the model as it is run, and calibration scores what the output means."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from slicer_compile.calibrate import COSINE, IOU, METRICS, TOKEN, TOP1, round_trip
from slicer_compile.compiler import compile_model
from slicer_compile.errors import ModelError
from slicer_compile.select.selector import Selector
from tests.export_models import (
    RNG,
    affine_offset_model,
    attention_model,
    dense_map_model,
    neck_model,
    sequence_model,
    shape_arithmetic_model,
)
from tests.models import EXAMPLES


def _calib(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_symbolic_image_sizes_are_never_pinned_to_1_silently(tmp_path):
    model = dense_map_model(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match=r"H \(axis 2\), W \(axis 3\).*--input-shape x=1x3x\?x\?"):
        compile_model(model, device="jetson", out_dir=tmp_path / "a")
    assert not (tmp_path / "a").exists()

    given = compile_model(model, device="jetson", out_dir=tmp_path / "b", input_shapes={"x": (1, 3, 40, 24)})
    assert given.split("s0000").if_shape == (1, 3, 40, 24)

    calib = _calib(tmp_path / "c.npz", x=RNG.random((5, 3, 32, 20)))  # float64, as np.random makes it
    sized = compile_model(model, device="jetson", out_dir=tmp_path / "c", calib=calib)
    assert sized.split("s0000").if_shape == (1, 3, 32, 20)
    assert max(s.if_bytes for s in sized.splits) >= 6 * 32 * 20 * 4  # the 6-channel feature at full size
    notes = sized.manifest["shape_notes"]
    assert any("batch axis B" in n and "pinned to 1" in n for n in notes)
    assert any(re.search(r"axis 2 \(H\).* 32", n) for n in notes)
    report = (sized.path / "report.md").read_text()
    assert "set to 32, the calibration samples' size" in report


def test_a_static_batch_calibrates_in_its_batch(tmp_path):
    model = dense_map_model(tmp_path / "m.onnx", batch=8, size=(16, 16))
    calib = _calib(tmp_path / "c.npz", x=RNG.random((20, 3, 16, 16)).astype(np.float32))  # 8 + 8 + 4 (padded)
    artifact = compile_model(model, device="jetson", out_dir=tmp_path / "a", calib=calib)
    assert artifact.calibration.measured and artifact.calibration.samples == 20
    assert artifact.split("s0000").if_shape[0] == 8
    fidelity = [s.fidelity_at(0.5) for s in artifact.splits]
    assert all(f is not None and 0.5 < f <= 1.0 for f in fidelity)


@pytest.mark.parametrize("build, expected", [
    (lambda p: dense_map_model(p, size=(16, 16)), IOU),
    (lambda p: sequence_model(p, "embedding"), COSINE),
    (lambda p: sequence_model(p, "tokens"), TOKEN),
    (lambda p: EXAMPLES / "digits_cnn.onnx", TOP1),
], ids=["dense-map", "embedding", "per-token", "classifier"])
def test_the_metric_follows_what_the_output_is(tmp_path, build, expected):
    model = build(tmp_path / "m.onnx")
    inputs = {i.name: i for i in onnx.load(str(model)).graph.input}
    arrays = {}
    for name, info in inputs.items():
        dims = [d.dim_value or 6 for d in info.type.tensor_type.shape.dim][1:]
        arrays[name] = RNG.random((6, *dims)).astype(np.float32)
    calib = _calib(tmp_path / "c.npz", **arrays)
    artifact = compile_model(model, device="jetson", out_dir=tmp_path / "a", calib=calib, max_pairs=2)
    assert artifact.calibration.metric == expected
    assert expected in (artifact.path / "report.md").read_text()
    forced = compile_model(model, device="jetson", out_dir=tmp_path / "b", calib=calib, max_pairs=2,
                           metric=COSINE if expected != COSINE else TOP1)
    assert forced.calibration.metric != expected


def test_the_cli_offers_every_metric():
    from slicer_compile.cli.compile_commands import METRIC_NAMES

    assert set(METRIC_NAMES) == set(METRICS)


def test_model_metadata_reaches_both_parts(tmp_path):
    model = dense_map_model(tmp_path / "m.onnx", size=(16, 16), metadata={"characters": "abc0123", "version": "7"})
    artifact = compile_model(model, device="jetson", out_dir=tmp_path / "a", max_pairs=2)
    split = next(s for s in artifact.splits if s.files)
    for part in ("edge", "server"):
        props = {p.key: p.value for p in artifact.load_part_model(split.id, part).metadata_props}
        assert props["characters"] == "abc0123" and props["version"] == "7"


def order_of(model, tensor: str) -> int:
    """Position of the node that makes ``tensor`` among the model's non-static nodes."""
    from slicer_compile.graph.cuts import order_graph

    return next(i for i, n in enumerate(order_graph(model).nodes) if tensor in n.output)


def test_a_side_tensor_the_server_can_recompute_is_not_sent(tmp_path):
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.frontend import concretize, load_onnx, normalise
    from slicer_compile.graph.cuts import find_cuts
    from slicer_compile.graph.partition import Partitioner

    model = concretize(normalise(load_onnx(attention_model(tmp_path / "m.onnx"))))
    cuts = find_cuts(model)
    # Every cut between the bias and its use would ship it; each ships the mask instead.
    inside = [c for c in cuts if "h" in c.crossing_names and c.position <= order_of(model, "biased")]
    assert inside, [c.crossing_names for c in cuts]
    for cut in inside:
        names = cut.crossing_names
        assert "bias" not in names and "attention_mask" in names, names  # 128 B of mask, not 1 KiB of bias
    # The pair still computes the model: the server part rebuilds the bias from the mask.
    feeds = {"x": RNG.standard_normal((1, 16, 128)).astype(np.float32),
             "attention_mask": (np.arange(16) < 10).astype(np.int64)[None]}
    with OnnxrtRunner(model) as full:
        expected = full.infer(feeds)["embedding"]
    pair = Partitioner(model).split(inside[0])
    with OnnxrtRunner(pair.edge) as edge, OnnxrtRunner(pair.server) as server:
        middle = edge.infer({k: v for k, v in feeds.items() if k in edge.input_names})
        got = server.infer({k: middle[k] for k in server.input_names})["embedding"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_side_bytes_are_in_the_table(tmp_path):
    from slicer_compile.report import split_table

    artifact = compile_model(EXAMPLES / "transformer.onnx", device="jetson", out_dir=tmp_path / "a", max_pairs=2)
    header, rows = split_table(artifact)
    column = [h for h, _ in header].index("side KiB (raw)")
    with_sides = [s for s in artifact.splits if s.sides]
    assert with_sides and all(s.side_bytes == sum(t.nbytes for t in s.sides) for s in with_sides)
    assert any(float(row[column]) > 0 for row in rows)


def test_shapes_lost_to_run_time_arithmetic_are_taken_from_a_run(tmp_path):
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.runtime.parts import part_without_codec

    # Calibrated too: the Shape outputs that cross have no sample axis and depend on the
    # run's batch, so calibration keeps each run's tensors together.
    calib = _calib(tmp_path / "c.npz", x=RNG.standard_normal((6, 3, 8, 8)).astype(np.float32))
    artifact = compile_model(shape_arithmetic_model(tmp_path / "m.onnx"), device="jetson", out_dir=tmp_path / "a",
                             max_pairs=20, calib=calib)
    assert all(0.0 <= s.fidelity_at(0.9) <= 1.0 for s in artifact.splits)
    assert artifact.calibration.samples == 6
    crossing = {t.name: t.shape for s in artifact.splits for t in s.crossing}
    assert crossing.get("flat") == (1, 256) and crossing.get("z2") == (1, 10)  # past the Reshape: offered, sized
    deepest = max(artifact.splits, key=lambda s: s.position)
    assert deepest.files  # materialised, and its parts check
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with OnnxrtRunner(onnx.load(str(artifact.path / "model.onnx"))) as full, \
            OnnxrtRunner(part_without_codec(artifact, deepest.id, "edge")) as edge, \
            OnnxrtRunner(part_without_codec(artifact, deepest.id, "server")) as server:
        middle = edge.infer({"x": x})
        np.testing.assert_allclose(server.infer(middle)["logits"], full.infer({"x": x})["logits"], rtol=1e-5)


def test_neighbour_agreement_scores_retrieval():
    from slicer_compile.calibrate import NEIGHBOURS, score

    reference = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert score(NEIGHBOURS, reference, reference * 3) == 1.0  # scale does not move a neighbour
    swapped = reference[[0, 2, 1, 3]]  # samples 1 and 2 trade places: every nearest pair changes
    assert score(NEIGHBOURS, reference, swapped) == 0.0


def test_recomputable_sides_follow_a_dag_of_cheap_ops():
    """A tensor reached by two paths from a mask (one through the other) resolves to the
    mask; one that needs a matrix product does not."""
    from onnx import TensorProto, helper

    from slicer_compile.frontend import concretize, normalise, tensor_types
    from slicer_compile.graph.cuts import RecomputableSides, order_graph
    from tests.export_models import weight

    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, [1, 8])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])
    nodes = [helper.make_node("Cast", ["mask"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["c", "c"], ["d"]),
             helper.make_node("Add", ["d", "c"], ["t"]),           # t needs c directly and through d
             helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["t", "xw"], ["out"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [mask, x], [out], [weight("w", 8, 8)]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = concretize(normalise(model))
    sides = RecomputableSides(model, order_graph(model), tensor_types(model))
    assert sides.inputs_of("t") == frozenset({"mask"})
    assert sides.inputs_of("xw") is None and sides.inputs_of("out") is None


def test_a_small_float_feature_beside_a_large_one_is_coded_too(tmp_path):
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.codec import SlicerConfig
    from slicer_compile.codec.ops import KNOBS_INPUT, knobs_tensor
    from slicer_compile.graph.codec_nodes import nbytes_name, payload_name

    artifact = compile_model(neck_model(tmp_path / "m.onnx"), device="jetson", out_dir=tmp_path / "a", max_pairs=20)
    both = [s for s in artifact.splits if {"big_r", "small_r"} <= {t.name for t in s.crossing}
            or {"big", "small"} <= {t.name for t in s.crossing}]
    assert both  # offered: the small one does not count against the one-activation limit
    split = both[0]
    assert all(t.kind == "activation" for t in split.crossing) and split.side_bytes == 0
    assert split.payload_bound_at(0.9) < split.if_bytes / 4  # both coded: the bound covers them
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    with OnnxrtRunner(onnx.load(str(artifact.path / "model.onnx"))) as full, \
            OnnxrtRunner(artifact.load_part_model(split.id, "edge")) as edge, \
            OnnxrtRunner(artifact.load_part_model(split.id, "server")) as server:
        sent = edge.infer({"x": x, KNOBS_INPUT: knobs_tensor(SlicerConfig(sparsity=0.5))})
        # Each payload is the encoder's buffer up to its byte count, as the client sends it.
        payloads = {payload_name(t.name): sent[payload_name(t.name)][: int(sent[nbytes_name(t.name)][0])]
                    for t in split.activations}
        got = server.infer(payloads)["logits"]
        expected = full.infer({"x": x})["logits"]
    cosine = float((got * expected).sum() / np.linalg.norm(got) / np.linalg.norm(expected))
    assert cosine > 0.9


def test_padding_beside_an_attention_mask_is_not_coded(tmp_path):
    """The transformer example: where its attention mask can cross beside the hidden
    state, the padded rows are left out of the coding, in the client, the engine graph
    and calibration alike; fidelity counts the valid positions."""
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.codec import SlicerConfig, decode, encode
    from slicer_compile.codec.ops import KNOBS_INPUT, knobs_tensor
    from slicer_compile.codec.padding import masked, padded_config
    from slicer_compile.graph.codec_nodes import nbytes_name, payload_name
    from slicer_compile.runtime.parts import part_without_codec

    calib = EXAMPLES / "transformer_calib.npz"
    artifact = compile_model(EXAMPLES / "transformer.onnx", device="jetson", out_dir=tmp_path / "a", calib=calib,
                             calib_samples=8)
    masked_splits = [s for s in artifact.splits if s.files and any(t.mask for t in s.activations)]
    assert masked_splits, [s.crossing for s in artifact.splits]
    split = masked_splits[0]
    activation = next(t for t in split.activations if t.mask)
    assert activation.mask == "attention_mask" and split.fidelity_at(0.5) > 0.9

    data = np.load(calib)
    inputs = {k: data[k][2:3] for k in ("input_ids", "attention_mask")}  # a sample with 16 padded tokens of 32
    mask = inputs["attention_mask"]
    assert 0 < mask.mean() < 1
    cfg = SlicerConfig(sparsity=0.9)
    with OnnxrtRunner(part_without_codec(artifact, split.id, "edge")) as edge:
        hidden = edge.infer({k: v for k, v in inputs.items() if k in edge.input_names})[activation.name]
    padded_rows = mask[0] == 0
    coded = decode(encode(masked(hidden, mask), padded_config(cfg, mask)))
    assert not coded[0, padded_rows].any()  # nothing kept where the model pads
    plain = encode(hidden, cfg)
    assert len(encode(masked(hidden, mask), padded_config(cfg, mask))) < 0.75 * len(plain)
    # The engine's graph (edge.onnx, encoder inside) makes the same payload as the client.
    with OnnxrtRunner(artifact.load_part_model(split.id, "edge")) as engine:
        out = engine.infer({**{k: v for k, v in inputs.items() if k in engine.input_names},
                            KNOBS_INPUT: knobs_tensor(padded_config(cfg, mask))})
    sent = out[payload_name(activation.name)][: int(out[nbytes_name(activation.name)][0])]
    assert bytes(sent) == encode(masked(hidden, mask), padded_config(cfg, mask))


def test_shape_tensors_are_never_stacked_across_sparsities(tmp_path):
    # One sample: a shape vector [1, -1] has the length of the batch axis, and stacking it
    # with the samples of five sparsities would feed Reshape a 10-element target.
    calib = _calib(tmp_path / "c.npz", x=RNG.standard_normal((1, 3, 8, 8)).astype(np.float32))
    artifact = compile_model(shape_arithmetic_model(tmp_path / "m.onnx"), device="jetson", out_dir=tmp_path / "a",
                             max_pairs=20, calib=calib)
    assert artifact.calibration.samples == 1
    assert all(len(s.fidelity) == 5 for s in artifact.splits if s.id in artifact.pareto)


@pytest.fixture(scope="module")
def offset_artifacts(tmp_path_factory):
    """The per-channel-offset model compiled with and without centring, on the same samples."""
    root = tmp_path_factory.mktemp("offsets")
    model = affine_offset_model(root / "m.onnx")
    calib = _calib(root / "c.npz", x=np.random.default_rng(1).standard_normal((32, 3, 16, 16)).astype(np.float32))
    return {centring: compile_model(model, device="jetson", out_dir=root / f"a{centring}", calib=calib, max_pairs=20,
                                    centring=centring) for centring in (True, False)}


def _split_sending(artifact, name: str):
    return next(s for s in artifact.splits if [t.name for t in s.activations] == [name])


def test_calibration_sees_a_tensor_with_channel_offsets_and_the_selector_steers_away(offset_artifacts):
    plain = offset_artifacts[False]
    affine, conv = _split_sending(plain, "affine"), _split_sending(plain, "conv")
    assert plain.calibration.metric == IOU  # a probability map
    # top-k drops values to zero, far from the channel offsets: the map downstream breaks,
    # while the zero-centred convolution output two nodes earlier codes as it should.
    for s in (0.5, 0.75, 0.9, 0.95):
        assert affine.fidelity_at(s) < conv.fidelity_at(s) - 0.1
    assert affine.fidelity_at(0.9) < 0.5 * conv.fidelity_at(0.9)
    decision = Selector.from_artifact(plain).choose_within_budget(0.2)
    assert decision.fidelity >= 0.8 and decision.split_id != affine.id


def test_centring_makes_a_tensor_with_channel_offsets_usable(offset_artifacts):
    centred, plain = offset_artifacts[True], offset_artifacts[False]
    affine, conv = _split_sending(centred, "affine"), _split_sending(centred, "conv")
    (tensor,) = affine.activations
    assert tensor.centre is not None and tensor.centre.axis == 1  # NCHW: the channels
    # The offsets found are the affine layer's shifts (the convolution before it is zero-mean).
    shifts = onnx.numpy_helper.to_array(next(i for i in onnx.load(str(centred.path / "model.onnx")).graph.initializer
                                             if i.name == "shift")).ravel()
    np.testing.assert_allclose(tensor.centre.offset, shifts, atol=0.2)
    # Coded as its residual, the tensor is as usable as the zero-centred one.
    for s in (0.5, 0.75, 0.9, 0.95):
        assert affine.fidelity_at(s) >= conv.fidelity_at(s) - 0.03
    assert centred.manifest["calibration"]["centred"] == ["affine"]  # the others code as well plain
    assert "codec.centring" in (centred.path / "report.md").read_text()
    # Now the deeper split is the selector's choice at the same budget.
    assert Selector.from_artifact(centred).choose_within_budget(0.2).split_id == affine.id != \
        Selector.from_artifact(plain).choose_within_budget(0.2).split_id


def test_a_centred_tensor_is_coded_alike_by_client_engine_and_server(offset_artifacts):
    """The engine's graph (Sub before the encoder, Add after the decoder) and the Python
    client and server paths agree, and the pair computes the model."""
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.codec import SlicerConfig, encode
    from slicer_compile.codec.centring import centred as residual
    from slicer_compile.codec.ops import KNOBS_INPUT, knobs_tensor
    from slicer_compile.graph.codec_nodes import nbytes_name, payload_name
    from slicer_compile.runtime.client import EdgeClient
    from slicer_compile.runtime.parts import part_without_codec
    from slicer_compile.runtime.server import SplitServer

    artifact = offset_artifacts[True]
    split = _split_sending(artifact, "affine")
    (tensor,) = split.activations
    assert split.files
    cfg = SlicerConfig(sparsity=0.9)
    x = np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with OnnxrtRunner(artifact.load_part_model(split.id, "edge")) as edge, \
            OnnxrtRunner(artifact.load_part_model(split.id, "server")) as server, \
            OnnxrtRunner(onnx.load(str(artifact.path / "model.onnx"))) as full, \
            OnnxrtRunner(_with_output(artifact, "affine")) as probe:
        out = edge.infer({"x": x, KNOBS_INPUT: knobs_tensor(cfg)})
        sent = out[payload_name("affine")][: int(out[nbytes_name("affine")][0])]
        probe_value, expected = probe.infer({"x": x})["affine"], full.infer({"x": x})["prob_map"]
        assert bytes(sent) == encode(residual(probe_value, tensor.centre), cfg)
        engine_map = server.infer({payload_name("affine"): sent})["prob_map"]
    # What calibration measured: its round trip (centring included) through the server part.
    reference = round_trip(probe_value, cfg, centre=tensor.centre)
    with OnnxrtRunner(part_without_codec(artifact, split.id, "server")) as core:
        np.testing.assert_allclose(engine_map, core.infer({"affine": reference})["prob_map"], rtol=1e-5, atol=1e-6)
    assert ((engine_map > 0.5) == (expected > 0.5)).mean() > 0.7
    with SplitServer(artifact.path, port=0) as srv, EdgeClient(artifact.path, srv.url) as client:
        served = client.infer({"x": x}, split=split.id, config=cfg).outputs["prob_map"]
    np.testing.assert_allclose(served, engine_map, rtol=1e-5, atol=1e-5)


def _with_output(artifact, name: str):
    model = onnx.load(str(artifact.path / "model.onnx"))
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model
