"""The stream transport of a split LLM: one WebSocket per client, the session header
once, a frame per token. It generates what the KServe path generates, its bytes at the
socket are the frames and a few bytes of framing, a bad frame is refused without
touching the session, and a lost server is replaced mid-sequence."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="building the test LLM needs torch (pip install -e .[torch])")
pytest.importorskip("transformers", reason="building the test LLM needs transformers (the torch extra)")

import aiohttp  # noqa: E402

from slicer_compile.codec import Float16Config, Int8Config  # noqa: E402
from slicer_compile.codec.stream import StreamEncoder  # noqa: E402
from slicer_compile.runtime.linkmeter import CountingProxy  # noqa: E402
from slicer_compile.runtime.llm.client import EdgeLLM  # noqa: E402
from slicer_compile.runtime.llm.server import LlmServer  # noqa: E402
from slicer_compile.runtime.transport import ServerError  # noqa: E402
from tests.runtime.llm.test_serving import EdgeSide, artifact, model, reference  # noqa: E402, F401
from tests.runtime.servers import ServerProcess  # noqa: E402

PROMPT = [5, 17, 3, 42, 8]


def test_every_cut_generates_the_unsplit_models_tokens(artifact, model):
    expected = reference(model, PROMPT, 24)
    with LlmServer(artifact, port=0) as server, EdgeLLM(artifact, server.url, transport="stream") as llm:
        for cut in range(model[0].num_layers + 1):
            assert [s.token for s in llm.generate(PROMPT, 24, cut=cut, codec="float32")] == expected, cut
        # Codecs with no quantiser ranges: the tokens of the KServe path (SLICER and the
        # dense codec stream with float16 ranges, a hair apart: tests/codec/test_stream.py).
        with EdgeLLM(artifact, server.url) as http:
            for codec in ("float16", "int8", "zstd"):
                assert ([s.token for s in llm.generate(PROMPT, 24, cut=2, codec=codec)]
                        == [s.token for s in http.generate(PROMPT, 24, cut=2, codec=codec)]), codec
        assert server.host.sessions() == 0  # each sequence's last step ended it


def test_the_socket_carries_the_frame_and_its_websocket_framing(artifact, model):
    hidden = model[0].hidden_size
    with LlmServer(artifact, port=0) as server, CountingProxy(server.url) as proxy, \
            EdgeLLM(artifact, proxy.url, transport="stream") as llm:
        for codec, frame in (("float16", 2 * hidden + 5), ("int8", 4 + hidden + 5)):
            steps, before = [], proxy.counts()
            for step in llm.generate(PROMPT, 8, cut=2, codec=codec):
                after = proxy.counts()
                steps.append((step, after - before))
                before = after
            for step, crossed in steps[1:]:
                assert step.payload_bytes == frame
                # Client to server: the frame behind 2 bytes, a 16-bit length past 125, the mask.
                assert crossed.up == frame + 2 + (2 if frame > 125 else 0) + 4 <= 1.25 * frame
                assert crossed.down == 2 + 4  # the token id, uint32, behind 2 bytes
    assert EdgeLLM(artifact, "127.0.0.1:9").transport == "http"


async def _exchange(url, messages):
    """Send messages on a fresh WebSocket, and collect the answer to each binary one and
    to each text one the server refuses (aiohttp's client, no per-message compression)."""
    answers = []
    async with aiohttp.ClientSession() as session, session.ws_connect(f"ws://{url}/v2/models/llm/stream",
                                                                      compress=0) as ws:
        for kind, message, answered in messages:
            await (ws.send_str(json.dumps(message)) if kind == "text" else ws.send_bytes(message))
            if answered:
                reply = await ws.receive(timeout=30)
                answers.append(json.loads(reply.data) if reply.type == aiohttp.WSMsgType.TEXT
                               else np.frombuffer(reply.data, "<u4").tolist())
    return answers


def test_bad_messages_are_refused_and_the_session_is_left_as_it_was(artifact, model):
    spec = model[0]
    cut, expected = 2, reference(model, PROMPT, 3)
    edge = EdgeSide(model, cut)
    encoder = StreamEncoder(Float16Config(), (1, 1, spec.hidden_size))
    hidden = edge.hidden(PROMPT)
    prompt_frames = [encoder.frame(np.ascontiguousarray(hidden[:, t:t + 1])) for t in range(len(PROMPT))]
    step1 = encoder.frame(edge.hidden([expected[0]]))
    corrupt = bytearray(step1)
    corrupt[3] ^= 0x40
    start = {"start": True, "sequence_id": "s", "cut": cut, "header": base64.b64encode(encoder.header).decode(),
             "prefill": len(PROMPT), "max_steps": 3}
    with LlmServer(artifact, port=0) as server:
        answers = asyncio.run(_exchange(server.url, [
            ("binary", step1, True),  # a frame before any start
            ("text", {"header": start["header"]}, True),  # a header without a start
            ("text", {**start, "header": base64.b64encode(
                StreamEncoder(Int8Config(), (spec.hidden_size,)).header).decode()}, True),  # not a token's shape
            *[("text", start, False)] + [("binary", f, i == len(PROMPT) - 1) for i, f in enumerate(prompt_frames)],
            ("text", start, True),  # a second start mid-sequence
            ("binary", bytes(corrupt), True),  # refused: nothing applied
            ("binary", prompt_frames[0], True),  # a replay: refused
            ("binary", step1, True),  # the true frame, after both: decodes as if they never came
        ]))
        assert answers[0]["status"] == 400 and "before any start" in answers[0]["error"]
        assert answers[1]["status"] == 400 and "header without a start" in answers[1]["error"]
        assert answers[2]["status"] == 400 and f"the header says [{spec.hidden_size}]" in answers[2]["error"]
        assert answers[3] == expected[:1]
        assert answers[4]["status"] == 409
        assert answers[5]["status"] == 400 and "CRC mismatch" in answers[5]["error"]
        assert answers[6]["status"] == 400 and "where frame 5 was expected" in answers[6]["error"]
        assert answers[7] == expected[1:2]
        assert server.host.sessions() == 0  # the socket closed mid-sequence: the server ended it


def test_a_server_killed_mid_stream_loses_no_token(artifact, model):
    expected = reference(model, PROMPT, 48)
    first = ServerProcess(artifact)
    try:
        with LlmServer(artifact, port=0) as second, \
                EdgeLLM(artifact, [first.url, second.url], timeout_s=10, transport="stream") as llm:
            steps = []
            for step in llm.generate(PROMPT, 48, cut=2, codec="float32"):
                steps.append(step)
                if len(steps) == 20:
                    first.kill()
            assert [s.token for s in steps] == expected
            assert [i for i, s in enumerate(steps) if s.resumed] == [20] and llm.failovers == 1
            assert second.host.sessions() == 0
    finally:
        first.close()


def test_a_refused_step_is_one_clear_error(artifact):
    from slicer_compile.runtime.llm.client import Plan

    with LlmServer(artifact, port=0) as server, EdgeLLM(artifact, server.url, transport="stream") as llm:
        with pytest.raises(ServerError, match="400: cut must be a layer boundary"):
            list(llm.generate(PROMPT, 4, plan=Plan(0, 99, False, "float32", "float32", "test")))
        assert llm.failovers == 0  # a refusal is not a lost server


def test_a_stream_to_a_model_the_server_does_not_have_is_refused(artifact):
    from slicer_compile.runtime.llm.stream import StreamTransport

    with LlmServer(artifact, port=0) as server:
        host, port = server.url.rsplit(":", 1)
        stream = StreamTransport(host, int(port), timeout_s=10)
        try:
            with pytest.raises(ServerError) as refused:
                stream.start("no-such-model", {"sequence_id": 1, "cut": 2})
            assert refused.value.status == 404 and not refused.value.server_failed
        finally:
            stream.close()
