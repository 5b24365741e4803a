"""Decoder-only LLMs exported to ONNX by their users, with the KV cache as inputs and
outputs: read into the same per-layer parts as a transformers model, generating the
unsplit model's tokens at every cut; what cannot be read is refused in one line."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="making the exports needs torch (pip install -e .[torch])")
transformers = pytest.importorskip("transformers", reason="making the exports needs transformers (the torch extra)")

from slicer_compile.errors import ModelError  # noqa: E402
from slicer_compile.llm import onnx_import  # noqa: E402
from slicer_compile.llm.onnx_import import read_onnx_llm  # noqa: E402
from slicer_compile.llm.stack import generate_greedy, split_stacks  # noqa: E402
from tests.llm.test_compile_llm import run_cli  # noqa: E402
from tests.llm.onnx_exports import export_with_past, export_without_past  # noqa: E402
from tests.llm.test_llama_parts import NEW_TOKENS, reference_greedy, tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def exported(request, model, tmp_path_factory):
    """The tiny Llama as its users would export it, by either exporter."""
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    return export_with_past(model, path, exporter=request.param)


def test_the_spec_is_read_from_the_export(model, exported):
    spec, parts = read_onnx_llm(exported)
    config = model.config
    assert (spec.vocab_size, spec.hidden_size, spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim,
            spec.intermediate_size) == (config.vocab_size, config.hidden_size, config.num_hidden_layers,
                                        config.num_attention_heads, config.num_key_value_heads,
                                        config.hidden_size // config.num_attention_heads, config.intermediate_size)
    assert len(parts.layers) == config.num_hidden_layers
    import onnx

    # Every layer part has the contract of the parts made from transformers: the mask and
    # positions as inputs of those names; the shapes it read from the model's inputs
    # (the token ids', other layers' caches') it now reads from its own.
    for blob in parts.layers:
        layer = onnx.load_from_string(blob)
        assert [i.name for i in layer.graph.input] == ["hidden", "past_key", "past_value", "attention_mask",
                                                       "position_ids"]
        assert [o.name for o in layer.graph.output] == ["hidden_out", "present_key", "present_value"]


def test_a_split_at_every_cut_generates_the_unsplit_models_tokens(model, exported):
    spec, parts = read_onnx_llm(exported)
    prompt = [5, 17, 3, 42, 8]
    expected = reference_greedy(model, prompt, NEW_TOKENS)
    assert len(set(expected)) > 4  # the sequence wanders: a real test of every step
    for cut in range(spec.num_layers + 1):
        edge, server = split_stacks(spec, parts, cut)
        try:
            assert generate_greedy(edge, server, prompt, NEW_TOKENS) == expected, cut
        finally:
            edge.close()
            server.close()


def test_parts_that_do_not_reproduce_the_model_are_refused(exported, monkeypatch):
    """The check after cutting is what stands between a wrong boundary and wrong tokens:
    layers put in the wrong order must not pass it."""
    real = onnx_import.check_parts_reproduce

    def with_layers_swapped(model, layout, spec, parts, source):
        layers = (parts.layers[1], parts.layers[0], *parts.layers[2:])
        real(model, layout, spec, onnx_import.LlmParts(parts.embed, layers, parts.head), source)

    monkeypatch.setattr(onnx_import, "check_parts_reproduce", with_layers_swapped)
    with pytest.raises(ModelError, match="do not reproduce it"):
        read_onnx_llm(exported)


def test_the_export_compiles_and_answers_like_the_transformers_model(model, exported, tmp_path, capsys):
    code, out, err = run_cli(["llm", str(exported), "-o", str(tmp_path / "out"), "--weights", "int8",
                              "--max-tokens", "64", "--device", "jetson"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["inspect", str(tmp_path / "out")], capsys)
    assert code == 0 and "hidden" in out
    code, out, _ = run_cli(["select", str(tmp_path / "out"), "--bandwidth", "10MHz", "--snr-db", "10",
                            "--memory", "1GB", "--deadline", "5s", "--max-tokens", "32"], capsys)
    assert code == 0
    # Served: the edge runs its int8 copies of layers 1..2, the server the rest at full
    # precision; the tokens are what that split computes here, step for step.
    from slicer_compile.llm.artifact import load_llm_artifact
    from slicer_compile.runtime.llm.client import EdgeLLM
    from slicer_compile.runtime.llm.server import LlmServer

    artifact = load_llm_artifact(tmp_path / "out")
    edge, server = split_stacks(artifact.spec, artifact.parts(), 2, edge_parts=artifact.parts("edge"))
    try:
        expected = generate_greedy(edge, server, [4, 8, 15, 16], 12)
    finally:
        edge.close()
        server.close()
    with LlmServer(tmp_path / "out", port=0) as served, EdgeLLM(artifact, served.url) as llm:
        assert [s.token for s in llm.generate([4, 8, 15, 16], 12, cut=2, codec="float32")] == expected


@pytest.mark.parametrize("make, message", [
    (lambda m, p: p.write_bytes(b"\x08\x07garbage") and p, "not a readable ONNX model"),
    (export_without_past, "no KV-cache inputs"),
    (lambda m, p: export_with_past(m, p, static_past=True), "fixed length"),
])
def test_exports_it_cannot_split_are_one_line_and_write_nothing(model, tmp_path, capsys, make, message):
    path = make(model, tmp_path / "model.onnx")
    code, _, err = run_cli(["llm", str(path), "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and err.strip().count("\n") == 0 and message in err, err
    assert not (tmp_path / "out").exists()


def test_an_input_the_runtime_cannot_provide_is_named(model, tmp_path):
    import onnx

    path = export_with_past(model, tmp_path / "model.onnx")
    graph = onnx.load(path)
    graph.graph.input.append(onnx.helper.make_tensor_value_info("token_type_ids", onnx.TensorProto.INT64, [1, "s"]))
    onnx.save(graph, path)
    with pytest.raises(ModelError, match="'token_type_ids' is not one the split runtime provides"):
        read_onnx_llm(path)


def test_the_trained_lm_read_from_its_export_generates_its_tokens(tmp_path):
    from tests.llm.test_llama_parts import TRAINED_LM

    trained = transformers.AutoModelForCausalLM.from_pretrained(TRAINED_LM, local_files_only=True).float().eval()
    spec, parts = read_onnx_llm(export_with_past(trained, tmp_path / "tiny_lm.onnx"))
    prompt = list(b"def fibonacci(n):")
    edge, server = split_stacks(spec, parts, spec.num_layers // 2)
    try:
        assert generate_greedy(edge, server, prompt, NEW_TOKENS) == reference_greedy(trained, prompt, NEW_TOKENS)
    finally:
        edge.close()
        server.close()
