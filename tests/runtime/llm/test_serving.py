"""A split LLM run for real: the server keeps each session's KV cache, batches the
steps of sessions at the same position, evicts on idle time and on its memory cap (the
evicted client hears why); the edge client generates through it per token or by a
hand-over. With the codec bypassed, every mode and cut generates the unsplit model's
greedy tokens."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="building the test LLM needs torch (pip install -e .[torch])")
pytest.importorskip("transformers", reason="building the test LLM needs transformers (the torch extra)")

from slicer_compile.llm.compile import compile_llm  # noqa: E402
from slicer_compile.llm.stack import LayerStack, generate_greedy, split_stacks  # noqa: E402
from slicer_compile.runtime.host import HostError  # noqa: E402
from slicer_compile.runtime.llm.client import EdgeLLM, Plan  # noqa: E402
from slicer_compile.runtime.llm.host import LlmHost, LlmServerConfig, Step  # noqa: E402
from slicer_compile.runtime.llm.server import LlmServer  # noqa: E402
from slicer_compile.runtime.transport import ServerError  # noqa: E402
from tests.llm.test_llama_parts import tiny_llama  # noqa: E402

TOKENS = 24


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("llm") / "out"
    compile_llm(tiny_llama().config, device="jetson", out_dir=out, max_tokens=128)
    return out


@pytest.fixture(scope="module")
def model(artifact):
    from slicer_compile.llm.artifact import load_llm_artifact

    loaded = load_llm_artifact(artifact)
    return loaded.spec, loaded.parts()


def reference(model, prompt, new_tokens=TOKENS):
    spec, parts = model
    edge, server = split_stacks(spec, parts, spec.num_layers)
    try:
        return generate_greedy(edge, server, prompt, new_tokens)
    finally:
        edge.close()
        server.close()


class EdgeSide:
    """The edge's layers 1..cut for one sequence, as a client runs them."""

    def __init__(self, model, cut):
        spec, parts = model
        self.stack = LayerStack(spec, parts.layers[:cut], embed=parts.embed)

    def hidden(self, ids):
        return self.stack.forward(self.stack.embed(np.asarray(ids)))


def test_every_cut_generates_the_unsplit_models_tokens(artifact, model):
    prompt = [5, 17, 3, 42, 8]
    expected = reference(model, prompt)
    host = LlmHost(artifact)
    try:
        for cut in range(model[0].num_layers + 1):
            edge, tokens, new = EdgeSide(model, cut), [], prompt
            for i in range(TOKENS):
                step = Step(f"s{cut}", start=i == 0, end=i == TOKENS - 1, cut=cut, hidden=edge.hidden(new))
                tokens += host.step(step).tokens
                new = tokens[-1:]
            assert tokens == expected, cut
        assert host.sessions() == 0  # every end flag freed its session
    finally:
        host.stop()


def test_steps_arriving_together_run_as_one_batch_whatever_their_lengths(artifact, model):
    """Prefills batch by prompt length; the decode steps of sequences of different
    lengths then share one batch (caches padded on the left, the padding masked), and
    every sequence still generates the unsplit model's tokens."""
    prompts = [[i + 1, 7, 9, 11] for i in range(6)] + [[3, 4]] * 2  # six of one length, two of another
    expected = [reference(model, p, 4) for p in prompts]
    host = LlmHost(artifact)
    try:
        edges = [EdgeSide(model, 2) for _ in prompts]
        tokens = [[] for _ in prompts]
        news = list(prompts)
        for round_ in range(4):
            with host.hold():  # all of a round queued before the batcher looks
                futures = [host.submit(Step(f"q{i}", start=round_ == 0, cut=2, hidden=edges[i].hidden(news[i])))
                           for i in range(len(prompts))]
            results = [f.result(30) for f in futures]
            for i, r in enumerate(results):
                tokens[i] += r.tokens
                news[i] = r.tokens
            expected_batches = [2, 2, 6, 6, 6, 6, 6, 6] if round_ == 0 else [8] * 8
            assert sorted(r.batch_sizes[-1] for r in results) == expected_batches
        assert tokens == expected
        assert host.stats.max_batch == 8
    finally:
        host.stop()


def test_a_batch_is_at_most_max_batch(artifact, model):
    host = LlmHost(artifact, LlmServerConfig(max_batch=3))
    try:
        edge = EdgeSide(model, 1)
        hidden = edge.hidden([1, 2, 3])
        with host.hold():
            futures = [host.submit(Step(f"m{i}", start=True, cut=1, hidden=hidden)) for i in range(7)]
        assert sorted(f.result(30).batch_sizes[0] for f in futures) == [1, 3, 3, 3, 3, 3, 3]
    finally:
        host.stop()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_an_idle_session_is_evicted_and_its_client_told(artifact, model):
    clock = Clock()
    host = LlmHost(artifact, LlmServerConfig(idle_timeout_s=60, clock=clock))
    try:
        edge = EdgeSide(model, 2)
        host.step(Step("idle", start=True, cut=2, hidden=edge.hidden([1, 2])))
        host.step(Step("busy", start=True, cut=2, hidden=edge.hidden([1, 2])))
        clock.now = 50
        host.step(Step("busy", hidden=edge.hidden([3])))
        clock.now = 100  # "idle" last stepped at 0, "busy" at 50
        with pytest.raises(HostError, match="evicted \\(idle for more than 60 s\\)") as refused:
            host.step(Step("idle", hidden=edge.hidden([3])))
        assert refused.value.status == 410
        host.step(Step("busy", hidden=edge.hidden([4])))  # still held
        assert host.stats.evictions == {"idle for more than 60 s": 1}
    finally:
        host.stop()


def test_the_memory_cap_evicts_the_least_recently_used(artifact, model):
    spec = model[0]
    per_token = 2 * spec.num_kv_heads * spec.head_dim * 4 * (spec.num_layers - 1)  # cut 1: L-1 layers here
    clock = Clock()
    host = LlmHost(artifact, LlmServerConfig(max_kv_bytes=per_token * 10, clock=clock))
    try:
        edge = EdgeSide(model, 1)
        for i, name in enumerate(["old", "new"]):
            clock.now = i
            host.step(Step(name, start=True, cut=1, hidden=edge.hidden([1, 2, 3, 4])))  # 4 tokens each: 8 held
        clock.now = 2
        host.step(Step("new", hidden=edge.hidden([1, 2, 3])))  # 11 tokens held > 10: "old" goes
        with pytest.raises(HostError, match="memory: the server's KV caches reached their cap") as refused:
            host.step(Step("old", hidden=edge.hidden([5])))
        assert refused.value.status == 410 and host.kv_bytes() == 7 * per_token
    finally:
        host.stop()


def test_bad_steps_are_refused_and_leave_the_session_as_it_was(artifact, model):
    host = LlmHost(artifact, LlmServerConfig(max_sessions=2))
    prompt = [9, 8, 7]
    expected = reference(model, prompt, 3)
    try:
        edge = EdgeSide(model, 2)
        first = host.step(Step("a", start=True, cut=2, hidden=edge.hidden(prompt))).tokens
        junk = EdgeSide(model, 2)  # another edge: what the refused steps carry must not advance "a"
        refusals = [
            (Step("nobody", hidden=junk.hidden([1])), 404, "no sequence 'nobody'"),
            (Step("a", start=True, cut=2, hidden=junk.hidden([1])), 409, "already started"),
            (Step("a", hidden=np.zeros((1, 1, 7), np.float32)), 400, "float32 \\[1, S, 64\\]"),
            (Step("a", hidden=np.zeros((1, 1, 64), np.float64)), 400, "float32"),
            (Step("b", start=True, cut=99, hidden=junk.hidden([1])), 400, "layer boundary"),
            (Step("c", start=True, cut=0, token_ids=np.array([[1, 10_000]])), 400, "token ids must lie"),
            (Step("d", start=True, cut=2, hidden=np.zeros((1, 200, 64), np.float32)), 400, "beyond the artifact"),
        ]
        for step, status, message in refusals:
            with pytest.raises(HostError, match=message) as refused:
                host.step(step)
            assert refused.value.status == status
        assert host.sessions() == 1  # refused starts left nothing
        host.step(Step("e", start=True, cut=2, hidden=junk.hidden([1])))
        with pytest.raises(HostError, match="its limit") as refused:
            host.step(Step("f", start=True, cut=2, hidden=junk.hidden([1])))
        assert refused.value.status == 503
        # The bad steps changed nothing: "a" carries on to the unsplit model's tokens.
        tokens = first
        for _ in range(2):
            tokens += host.step(Step("a", hidden=edge.hidden(tokens[-1:]))).tokens
        assert tokens == expected
    finally:
        host.stop()


def test_a_token_payload_of_the_wrong_shape_is_refused(artifact):
    from slicer_compile.codec import Float16Config, encode

    host = LlmHost(artifact)
    try:
        with pytest.raises(HostError, match="not one token's hidden state"):
            host.decode_token_payloads([encode(np.zeros((1, 2, 32), np.float32), Float16Config())])
        with pytest.raises(HostError, match="exceeds the limit of 64"):  # refused before it is decoded
            host.decode_token_payloads([encode(np.zeros((1, 2, 64), np.float32), Float16Config())])
        with pytest.raises(HostError, match="token payload 0"):
            host.decode_token_payloads([b"SLCR" + bytes(40)])
    finally:
        host.stop()


@pytest.mark.parametrize("kv_cache", [True, False])
def test_a_hand_over_continues_the_unsplit_models_tokens(artifact, model, kv_cache):
    prompt = [4, 44, 14, 41]
    expected = reference(model, prompt, 20)
    with LlmServer(artifact, port=0) as server, EdgeLLM(artifact, server.url) as llm:
        plan = Plan(edge_tokens=6, cut=2, kv_cache=kv_cache, codec="float32", kv_codec="float32", reason="test")
        steps = list(llm.generate(prompt, 20, plan=plan))
        assert [s.token for s in steps] == expected
        assert [s.mode for s in steps] == ["edge"] * 6 + ["server"] * 14
        shipped = steps[6].payload_bytes
        spec = model[0]
        kv = 2 * 2 * spec.num_kv_heads * spec.head_dim * 4 * (len(prompt) + 6)  # layers 1..2, key and value
        assert shipped == (kv + 4 * spec.hidden_size * (len(prompt) + 6) if kv_cache else 0)


def test_the_http_server_generates_per_token_for_many_clients(artifact, model):
    prompts = [[i + 3, 2 * i + 1, 5] for i in range(12)]
    expected = [reference(model, p, 16) for p in prompts]
    got = [None] * len(prompts)
    with LlmServer(artifact, port=0) as server:
        def client(i):
            with EdgeLLM(artifact, server.url) as llm:
                got[i] = [s.token for s in llm.generate(prompts[i], 16, cut=1 + i % 3, codec="float32")]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == expected
        assert server.host.sessions() == 0
        import urllib.request

        metrics = urllib.request.urlopen(f"http://{server.url}/metrics").read().decode()
        assert f"slicer_llm_tokens_total {16 * len(prompts)}" in metrics
        assert "slicer_llm_kv_bytes 0" in metrics and "slicer_llm_batch_size_max" in metrics


def test_the_codec_crosses_the_link_and_the_server_decodes_it(artifact, model):
    prompt = [1, 2, 3, 4, 5, 6]
    with LlmServer(artifact, port=0) as server, EdgeLLM(artifact, server.url) as llm:
        raw = list(llm.generate(prompt, 8, cut=2, codec="float32"))
        coded = list(llm.generate(prompt, 8, cut=2, codec="int8"))
    assert [s.token for s in raw] == reference(model, prompt, 8)
    # int8 of 64 values against their float32: a quarter, plus the payload's header (per
    # token today; once per session is the per-token wire's work)
    assert coded[1].payload_bytes < raw[1].payload_bytes / 2
    assert sum(a.token == b.token for a, b in zip(raw, coded)) >= 6


def test_http_refusals_say_what_is_wrong(artifact):
    from slicer_compile.runtime.protocol import InferMessage
    from slicer_compile.runtime.transport import HttpTransport, parse_server_address

    with LlmServer(artifact, port=0) as server:
        transport = HttpTransport(*parse_server_address(server.url))
        cases = [
            ({"hidden": np.zeros((1, 1, 64), np.float32)}, {"sequence_id": "ghost"}, "404", "no sequence"),
            ({"hidden": np.zeros((1, 1, 64), np.float32)}, {}, "400", "needs a sequence_id"),
            ({"hidden": np.zeros((1, 1, 64), np.float32)}, {"sequence_id": "x", "sequence_start": "yes"}, "400",
             "sequence_start must be true or false"),
            ({"hidden_payloads": np.zeros(10, np.uint8), "payload_lengths": np.array([4], np.int64)},
             {"sequence_id": "x", "sequence_start": True, "cut": 1}, "400", "do not add up"),
        ]
        try:
            for tensors, parameters, status, message in cases:
                with pytest.raises(ServerError, match=message) as refused:
                    transport.infer("llm", InferMessage(tensors, parameters))
                assert f"answered {status}" in str(refused.value)
        finally:
            transport.close()
        assert server.host.sessions() == 0


def test_sixty_four_sessions_of_sixty_four_tokens_lose_no_step(artifact, model):
    """The load test of the issue, on the host: 64 sessions of eight prompt lengths step
    together every round (the batcher sees them at once: after the prefills, one batch
    of ragged lengths), and each ends with the unsplit model's tokens."""
    prompts = [[1 + i % 8, 2, 3] + [5] * (i % 8) for i in range(64)]
    expected = {i: reference(model, prompts[i], 64) for i in range(8)}
    host = LlmHost(artifact)
    try:
        edges = [EdgeSide(model, 2) for _ in range(64)]
        tokens = [[] for _ in range(64)]
        for round_ in range(64):
            with host.hold():
                futures = [host.submit(Step(f"load{i}", start=round_ == 0, end=round_ == 63, cut=2,
                                            hidden=edges[i].hidden(tokens[i][-1:] or prompts[i])))
                           for i in range(64)]
            for i, future in enumerate(futures):
                tokens[i] += future.result(60).tokens
        assert all(tokens[i] == expected[i % 8] for i in range(64))
        assert host.stats.tokens == 64 * 64 and host.stats.max_batch == 64 and host.sessions() == 0
    finally:
        host.stop()


def run_cli(args, capsys):
    from slicer_compile.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


def test_generate_streams_the_tokens_and_says_how_they_came(artifact, model, capsys):
    prompt = [7, 8, 9]
    expected = reference(model, prompt, 10)
    with LlmServer(artifact, port=0) as server:
        code, out, err = run_cli(["generate", str(artifact), "--server", server.url, "--prompt", "7,8,9",
                                  "--max-tokens", "10", "--cut", "3", "--codec", "float32"], capsys)
        assert code == 0, err
        assert [int(t) for t in out.split()] == expected  # a 96-token vocabulary: ids, not text
        assert "per-token split at layer 3" in err and "10 tokens (10 split)" in err
        code, out, err = run_cli(["generate", str(artifact), "--server", server.url, "--prompt", "7,8,9",
                                  "--max-tokens", "10", "--cut", "3", "--snr-db", "10", "--deadline", "1s"], capsys)
        assert code == 1 and err.strip().count("\n") == 0 and "not both" in err


def test_serve_runs_an_llm_artifact_and_stops_on_sigterm(artifact, model):
    import signal

    from tests.runtime.servers import ServerProcess

    server = ServerProcess(artifact)
    try:
        with EdgeLLM(artifact, server.url) as llm:
            assert [s.token for s in llm.generate([1, 2, 3], 6, cut=1, codec="float32")] == \
                reference(model, [1, 2, 3], 6)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    finally:
        server.close()


def test_bench_llm_measures_server_time_per_cut_and_the_link(artifact, capsys):
    import json

    code, out, err = run_cli(["bench", "llm", str(artifact), "--clients", "1,4", "--prompts", "4", "--tokens", "6",
                              "--prompt-tokens", "4", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    rows = result["server_time"]
    assert all(r["exact"] for r in rows) and {r["cut"] for r in rows} == {0, 1, 2, 3, 4}
    by = {(r["cut"], r["clients"]): r for r in rows}
    assert by[(0, 4)]["mean_batch"] == 4 and by[(0, 1)]["mean_batch"] == 1
    # The server runs fewer layers as the cut deepens: less compute per token.
    assert by[(4, 1)]["server_ms_per_token"] < by[(0, 1)]["server_ms_per_token"]
    modes = {r["mode"]: r for r in result["link"]}
    assert modes["hand-over after 8 edge tokens, KV recomputed"]["payload_bytes_per_token"] == 0
    assert all(r["token_agreement"] == 1.0 for r in result["link"] if "float16" in r["mode"] or "hand" in r["mode"])


def test_an_onnx_export_batches_sequences_of_different_lengths_exactly(tmp_path, model):
    """The parts read from a user's export (its own mask and position arithmetic) keep
    the mask and positions as inputs: padded, masked batches stay exact there too."""
    from tests.llm.onnx_exports import export_with_past

    exported = export_with_past(tiny_llama(), tmp_path / "model.onnx")
    compile_llm(exported, device="jetson", out_dir=tmp_path / "out", max_tokens=64)
    prompts = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7]]
    expected = [reference(model, p, 6) for p in prompts]  # the same weights as the export
    host = LlmHost(tmp_path / "out")
    try:
        assert host.runners.ragged
        from slicer_compile.llm.artifact import load_llm_artifact

        exported_model = (load_llm_artifact(tmp_path / "out").spec, load_llm_artifact(tmp_path / "out").parts())
        edges = [EdgeSide(exported_model, 2) for _ in prompts]
        tokens, news = [[] for _ in prompts], list(prompts)
        for round_ in range(6):
            with host.hold():
                futures = [host.submit(Step(f"x{i}", start=round_ == 0, cut=2, hidden=edges[i].hidden(news[i])))
                           for i in range(len(prompts))]
            for i, future in enumerate(futures):
                result = future.result(30)
                tokens[i] += result.tokens
                news[i] = result.tokens
                if round_:
                    assert result.batch_sizes[-1] == 3
        assert tokens == expected
    finally:
        host.stop()


@pytest.fixture(scope="module")
def calibrated_lm(tmp_path_factory):
    """The trained example LM compiled with calibration on its held-out text."""
    from tests.llm.test_llama_parts import TRAINED_LM

    out = tmp_path_factory.mktemp("lm") / "out"
    compile_llm(TRAINED_LM, device="jetson", out_dir=out, max_tokens=256, calib_text=TRAINED_LM / "heldout.txt",
                calib_positions=254)
    return out


@pytest.mark.parametrize("codec", ["int8", "slicer-0.5"])
def test_served_with_the_codec_the_tokens_agree_as_calibrated(calibrated_lm, codec):
    """Per-token payloads decoded by the server, its KV cache built from what it received,
    teacher-forced over the calibration's own positions: the agreement with the unsplit
    model is what calibration stored for this cut and codec."""
    from slicer_compile.codec import encode
    from slicer_compile.llm.artifact import load_llm_artifact
    from slicer_compile.llm.calibrate import SETTINGS, text_tokens, windows_of
    from tests.llm.test_llama_parts import TRAINED_LM

    artifact = load_llm_artifact(calibrated_lm)
    spec, parts, cut = artifact.spec, artifact.parts(), 2
    calibration = artifact.manifest["calibration"]
    windows = windows_of(text_tokens(TRAINED_LM / "heldout.txt", spec), calibration["positions"])
    host = LlmHost(calibrated_lm)
    agree = total = 0
    try:
        full = LayerStack(spec, parts.layers, embed=parts.embed, head=parts.head)
        edge = EdgeSide((spec, parts), cut)
        for w, window in enumerate(windows):
            full.reset()
            exact = full.logits(full.forward(full.embed(window[:-1])))[0].argmax(-1)
            hidden = edge.hidden(window[:-1])  # teacher-forced: the true tokens, one pass
            edge.stack.reset()
            for t in range(len(window) - 1):
                payload = encode(np.ascontiguousarray(hidden[:, t:t + 1]), SETTINGS[codec])
                step = Step(f"cal{w}", start=t == 0, end=t == len(window) - 2, cut=cut,
                            hidden=host.decode_token_payloads([payload]))
                agree += host.step(step).tokens[0] == exact[t]
                total += 1
        full.close()
    finally:
        host.stop()
    calibrated = calibration["cuts"][str(cut)][codec]["token_agreement"]
    assert total == calibration["positions"]
    assert abs(agree / total - calibrated) <= 0.02, (agree / total, calibrated)
