"""Small models with the properties of third-party exports, built in code: symbolic
image sizes, a static batch, model metadata, a pooled embedding, per-token logits, an
attention bias made from an integer mask, and run-time shape arithmetic. Used by
tests/test_real_exports.py and tools/real_exports_report.py."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def weight(name: str, *shape: int, rng: np.random.Generator = RNG) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)


def save_model(nodes, inputs, outputs, initializers, path, metadata=None):
    graph = helper.make_graph(nodes, "export", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def dense_map_model(path, batch="B", size=("H", "W"), metadata=None):
    """Conv -> Relu -> Conv 1x1 -> Sigmoid: a probability map the size of the image."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, *size])
    y = helper.make_tensor_value_info("prob_map", TensorProto.FLOAT, [batch, 1, *size])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
             helper.make_node("Sigmoid", ["c2"], ["prob_map"])]
    inits = [weight("w1", 6, 3, 3, 3), weight("b1", 6), weight("w2", 1, 6, 1, 1), weight("b2", 1)]
    return save_model(nodes, [x], [y], inits, path, metadata)


def sequence_model(path, head: str):
    """Tokens [B, 6, 8] -> MatMul -> Relu, then a pooled embedding or per-token probabilities."""
    x = helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["B", 6, 8])
    nodes = [helper.make_node("MatMul", ["tokens", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"])]
    inits = [weight("w1", 8, 16)]
    if head == "embedding":
        nodes.append(helper.make_node("ReduceMean", ["r"], ["sentence_embedding"], axes=[1], keepdims=0))
        out = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["B", 16])
    else:
        nodes += [helper.make_node("MatMul", ["r", "w2"], ["z"]), helper.make_node("Softmax", ["z"], ["token_probs"])]
        inits.append(weight("w2", 16, 5))
        out = helper.make_tensor_value_info("token_probs", TensorProto.FLOAT, ["B", 6, 5])
    return save_model(nodes, [x], [out], inits, path)


def attention_model(path, seq: int = 16, dim: int = 128):
    """Attention over positions whose additive bias [B, 1, S, S] comes from an int64 mask
    [B, S] by cheap ops, pooled to an embedding: the bias crosses the cuts inside."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", seq, dim])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", seq])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", dim])
    inits = [weight("w1", dim, dim), weight("ws", dim, seq), weight("w2", dim, dim),
             numpy_helper.from_array(np.ones((1, 1, seq, 1), np.float32), "rows"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(-1e4, np.float32), "big"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axes12"], ["mask4"]),         # B,1,1,S
        helper.make_node("Sub", ["one", "mask4"], ["hidden"]),
        helper.make_node("Mul", ["hidden", "big"], ["bias_row"]),
        helper.make_node("Mul", ["bias_row", "rows"], ["bias"]),                 # B,1,S,S
        helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "ws"], ["scores"]),                     # B,S,S
        helper.make_node("Unsqueeze", ["scores", "axis1"], ["scores4"]),
        helper.make_node("Add", ["scores4", "bias"], ["biased"]),
        helper.make_node("Softmax", ["biased"], ["attn4"]),
        helper.make_node("Squeeze", ["attn4", "axis1"], ["attn"]),
        helper.make_node("MatMul", ["attn", "h"], ["mixed"]),
        helper.make_node("MatMul", ["mixed", "w2"], ["projected"]),
        helper.make_node("ReduceMean", ["projected"], ["embedding"], axes=[1], keepdims=0),
    ]
    return save_model(nodes, [x, mask], [out], inits, path)


def shape_arithmetic_model(path):
    """A head that reshapes by a size computed at run time (Shape -> Gather -> Cast -> Mul
    -> Cast -> Concat -> Reshape): ONNX's shape inference loses every shape after it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 10])
    inits = [weight("w", 4, 3, 3, 3), weight("fc", 256, 10), weight("fc2", 10, 10),
             numpy_helper.from_array(np.array([0], np.int64), "i0"),
             numpy_helper.from_array(np.array([-1], np.int64), "m1"),
             numpy_helper.from_array(np.array([1.0], np.float32), "onef")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Shape", ["r"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["nf", "onef"], ["nf2"]),
             helper.make_node("Cast", ["nf2"], ["n2"], to=TensorProto.INT64),
             helper.make_node("Concat", ["n2", "m1"], ["target"], axis=0),
             helper.make_node("Reshape", ["r", "target"], ["flat"]),
             helper.make_node("MatMul", ["flat", "fc"], ["z"]), helper.make_node("Relu", ["z"], ["z2"]),
             helper.make_node("MatMul", ["z2", "fc2"], ["logits"])]
    return save_model(nodes, [x], [y], inits, path)


def neck_model(path):
    """Two branches of very different sizes that meet late (a detector's neck): at the
    cuts between them a small float feature crosses beside the large one."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 10])
    nodes = [helper.make_node("Conv", ["x", "wb"], ["big"], pads=[1, 1, 1, 1]),                   # B,32,16,16
             helper.make_node("Conv", ["x", "ws"], ["small"], pads=[1, 1, 1, 1], strides=[2, 2]),  # B,8,8,8
             helper.make_node("Relu", ["big"], ["big_r"]), helper.make_node("Relu", ["small"], ["small_r"]),
             helper.make_node("GlobalAveragePool", ["big_r"], ["gb"]),
             helper.make_node("GlobalAveragePool", ["small_r"], ["gs"]),
             helper.make_node("Concat", ["gb", "gs"], ["g"], axis=1),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["logits"])]
    inits = [weight("wb", 32, 3, 3, 3), weight("ws", 8, 3, 3, 3), weight("fc", 40, 10)]
    return save_model(nodes, [x], [y], inits, path)


def affine_offset_model(path, seed: int = 0):
    """Conv -> a learnable per-channel affine (``x·w + b``, as re-parameterised mobile
    blocks fold it) -> Conv -> Sigmoid: a text detector's probability map. After the
    affine the channels sit on offsets of a few units, which top-k, dropping values to
    zero, destroys. As in a trained network, the next convolution's bias compensates
    the offsets (no padding, so exactly), so that its map is zero-centred and the
    0.5 threshold sits where the values are. Its weights are its own (seeded here), so
    that the fidelity figures do not depend on what was built before."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, 16, 16])
    y = helper.make_tensor_value_info("prob_map", TensorProto.FLOAT, ["B", 1, 14, 14])
    offsets = np.linspace(1.5, 4.0, 8, dtype=np.float32) * np.where(np.arange(8) % 3, 1, -1).astype(np.float32)
    w2 = weight("w2", 1, 8, 3, 3, rng=rng)
    compensation = -np.einsum("ochw,c->o", numpy_helper.to_array(w2), offsets).astype(np.float32)
    inits = [weight("w1", 8, 3, 3, 3, rng=rng), w2, numpy_helper.from_array(compensation, "b2"),
             numpy_helper.from_array(np.full((1, 8, 1, 1), 0.8, np.float32), "scale"),
             numpy_helper.from_array(offsets.reshape(1, 8, 1, 1), "shift")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["conv", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "shift"], ["affine"]),
             helper.make_node("Conv", ["affine", "w2", "b2"], ["c2"]),
             helper.make_node("Sigmoid", ["c2"], ["prob_map"])]
    return save_model(nodes, [x], [y], inits, path)


def catalogue() -> dict:
    """name -> (builder(path) -> path, calibration arrays): every model above, for the report tool."""
    return {
        "dense map, symbolic H/W": (lambda p: dense_map_model(p), {"x": RNG.random((8, 3, 32, 24)).astype(np.float32)}),
        "dense map, static batch 8": (lambda p: dense_map_model(p, batch=8, size=(16, 16)),
                                      {"x": RNG.random((20, 3, 16, 16)).astype(np.float32)}),
        "pooled embedding": (lambda p: sequence_model(p, "embedding"),
                             {"tokens": RNG.random((8, 6, 8)).astype(np.float32)}),
        "per-token probabilities": (lambda p: sequence_model(p, "tokens"),
                                    {"tokens": RNG.random((8, 6, 8)).astype(np.float32)}),
        "attention bias from a mask": (lambda p: attention_model(p),
                                       {"x": RNG.standard_normal((8, 16, 128)).astype(np.float32),
                                        "attention_mask": (np.arange(16) < 10).astype(np.int64)[None].repeat(8, 0)}),
        "small feature beside a large one": (lambda p: neck_model(p),
                                             {"x": RNG.standard_normal((8, 3, 16, 16)).astype(np.float32)}),
        "per-channel offsets (affine layer)": (lambda p: affine_offset_model(p),
                                               {"x": RNG.standard_normal((32, 3, 16, 16)).astype(np.float32)}),
        "run-time shape arithmetic": (lambda p: shape_arithmetic_model(p),
                                      {"x": RNG.standard_normal((8, 3, 8, 8)).astype(np.float32)}),
    }
