"""The codec ops inside ONNX Runtime refuse bad input with a SlicerCompileError in the
caller, and the process lives on (an exception escaping an onnxruntime-extensions
Python op would abort it)."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.backends.onnxrt import OnnxrtRunner
from slicer_compile.codec import SlicerConfig
from slicer_compile.codec.ops import KNOBS_INPUT, knobs_tensor
from slicer_compile.compiler import compile_model
from slicer_compile.errors import SlicerCompileError
from tests.models import EXAMPLES


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    artifact = compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path_factory.mktemp("o") / "a",
                             max_pairs=2)
    return artifact, next(s for s in artifact.splits if s.files and s.activations)


def test_knobs_looser_than_the_encoder_node_are_an_error_not_an_abort(split):
    artifact, info = split
    x = artifact.example_inputs()
    with OnnxrtRunner(artifact.load_part_model(info.id, "edge")) as edge:
        with pytest.raises(SlicerCompileError, match="looser than this encoder node"):
            edge.infer({**x, KNOBS_INPUT: knobs_tensor(SlicerConfig(sparsity=0.3))})
        outputs = edge.infer({**x, KNOBS_INPUT: knobs_tensor(SlicerConfig(sparsity=0.9))})  # the session still works
    assert any(v.dtype == np.uint8 and v.any() for v in outputs.values())


def test_a_bad_payload_in_the_decoder_node_is_an_error_not_an_abort(split):
    artifact, info = split
    with OnnxrtRunner(artifact.load_part_model(info.id, "server")) as server:
        feeds = {name: np.zeros(64, np.uint8) for name in server.input_names}
        with pytest.raises(SlicerCompileError, match="not a slicer payload"):
            server.infer(feeds)
