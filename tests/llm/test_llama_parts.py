"""A Llama-family LLM as per-layer parts with explicit KV caches: the parts compute
the transformers model, and a split at any layer boundary generates exactly the
unsplit model's tokens (the codec bypassed)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the LLM front end needs torch (pip install -e .[torch])")
transformers = pytest.importorskip("transformers", reason="the LLM front end needs transformers (the torch extra)")

from slicer_compile.errors import ModelError  # noqa: E402
from slicer_compile.llm.export import export_parts  # noqa: E402
from slicer_compile.llm.llama import LlamaSpec  # noqa: E402
from slicer_compile.llm.stack import LayerStack, generate_greedy, split_stacks  # noqa: E402
from tests.models import EXAMPLES  # noqa: E402

NEW_TOKENS = 64


def tiny_llama(**overrides):
    """A random-weight Llama with every piece of the family: RMSNorm, rotary, GQA
    (4 query heads over 2 key/value heads), SwiGLU. Weights drawn wide (0.3, not 0.02)
    so that greedy decoding wanders instead of settling on one token."""
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      rope_theta=10000.0, initializer_range=0.3, **overrides)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


TRAINED_LM = EXAMPLES / "tiny_lm"


@pytest.fixture(scope="module", params=["random", "trained"])
def llama(request):
    """The random tiny Llama, and the LM trained on the standard library (examples/tiny_lm)."""
    if request.param == "random":
        model = tiny_llama()
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(TRAINED_LM, local_files_only=True).float().eval()
    spec = LlamaSpec.from_config(model.config)
    return model, spec, export_parts(model, spec)


def reference_greedy(model, prompt: list[int], new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(new_tokens):
            next_id = model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, len(prompt):].tolist()


def test_the_parts_compute_the_transformers_model(llama):
    model, spec, parts = llama
    prompt = np.array([[5, 17, 3, 42, 8, 91, 0, 60]]) % spec.vocab_size
    with torch.no_grad():
        expected = model(torch.tensor(prompt)).logits.numpy()
    stack = LayerStack(spec, parts.layers, embed=parts.embed, head=parts.head)
    # The prompt in one prefill, then the same tokens one at a time through the cache.
    prefill = stack.logits(stack.forward(stack.embed(prompt)))
    np.testing.assert_allclose(prefill, expected, atol=1e-4)
    stack.reset()
    stepwise = np.concatenate([stack.logits(stack.forward(stack.embed(prompt[:, i:i + 1])))
                               for i in range(prompt.shape[1])], axis=1)
    np.testing.assert_allclose(stepwise, expected, atol=1e-4)
    assert stack.length == prompt.shape[1]
    assert stack.kv_bytes == spec.num_layers * spec.kv_bytes_per_token_per_layer * prompt.shape[1]


def test_a_split_at_every_layer_boundary_generates_the_unsplit_tokens(llama):
    model, spec, parts = llama
    prompt = list(b"def main(") if spec.vocab_size == 256 else [1, 2, 3, 4, 5, 6, 7]  # bytes for the trained LM
    expected = reference_greedy(model, prompt, NEW_TOKENS)
    assert len(set(expected)) > 3  # a real sequence, not one token repeated
    for cut in range(spec.num_layers + 1):
        edge, server = split_stacks(spec, parts, cut)
        sent = []
        tokens = generate_greedy(edge, server, prompt, NEW_TOKENS, crossing=lambda h: sent.append(h.shape) or h)
        assert tokens == expected, cut
        # Each side keeps the cache of its own layers only: the state does not cross.
        assert edge.length == (len(prompt) + NEW_TOKENS if cut else 0)
        assert server.length == (len(prompt) + NEW_TOKENS - 1 if cut < spec.num_layers else 0)
        assert sent[0] == (1, len(prompt), spec.hidden_size) and set(sent[1:]) == {(1, 1, spec.hidden_size)}


@pytest.mark.parametrize("change, message", [
    ({"attention_bias": True}, "attention projections with biases"),
    ({"hidden_act": "gelu"}, "activation 'gelu'"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope scaling 'linear'"),
])
def test_unsupported_pieces_are_named(change, message):
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, **change)
    with pytest.raises(ModelError, match=message):
        LlamaSpec.from_config(config)


def test_a_model_that_is_not_a_decoder_only_llm_is_refused():
    config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)
    with pytest.raises(ModelError, match="model type 'bert' is not a supported decoder-only LLM"):
        LlamaSpec.from_config(config)
