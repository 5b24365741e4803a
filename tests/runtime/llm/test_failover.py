"""A split LLM generation survives the loss of its server: the client keeps what it
sent, opens the sequence on the next server with it as the prefill, and carries on;
no token is generated twice or skipped. A step sent twice is answered twice the same."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("torch", reason="building the test LLM needs torch (pip install -e .[torch])")
pytest.importorskip("transformers", reason="building the test LLM needs transformers (the torch extra)")

from slicer_compile.runtime.host import HostError  # noqa: E402
from slicer_compile.runtime.llm.client import EdgeLLM  # noqa: E402
from slicer_compile.runtime.llm.host import LlmHost, Step  # noqa: E402
from slicer_compile.runtime.llm.server import LlmServer  # noqa: E402
from tests.runtime.llm.test_serving import EdgeSide, artifact, model, reference  # noqa: E402, F401
from tests.runtime.servers import ServerProcess  # noqa: E402


@pytest.mark.parametrize("codec", ["float32", "int8"])
def test_a_server_killed_mid_generation_loses_no_token(artifact, model, codec):
    prompt = [5, 17, 3, 42, 8]
    first = ServerProcess(artifact)
    try:
        with LlmServer(artifact, port=0) as second:
            with EdgeLLM(artifact, second.url) as alone:  # the unkilled run, with the same codec
                expected = [s.token for s in alone.generate(prompt, 64, cut=2, codec=codec)]
            if codec == "float32":
                assert expected == reference(model, prompt, 64)
            with EdgeLLM(artifact, [first.url, second.url], timeout_s=10) as llm:
                steps = []
                for step in llm.generate(prompt, 64, cut=2, codec=codec):
                    steps.append(step)
                    if len(steps) == 20:
                        first.kill()
            assert [s.token for s in steps] == expected
            assert [i for i, s in enumerate(steps) if s.resumed] == [20] and llm.failovers == 1
            assert second.host.sessions() == 0  # the resumed sequence ended there
    finally:
        first.close()


def test_sixteen_sessions_finish_when_one_of_two_servers_dies(artifact, model):
    prompts = [[i + 2, 3 * i + 1, 7] for i in range(16)]
    expected = [reference(model, p, 24) for p in prompts]
    first = ServerProcess(artifact)
    got, counted, resumed, lock = [None] * 16, [0], [0], threading.Lock()
    try:
        with LlmServer(artifact, port=0) as second:
            def client(i):
                # Half the clients know the servers the other way round: the killed one
                # carries only some of the sessions, as a load balancer would spread them.
                servers = [first.url, second.url] if i % 2 == 0 else [second.url, first.url]
                with EdgeLLM(artifact, servers, timeout_s=10) as llm:
                    tokens = []
                    for step in llm.generate(prompts[i], 24, cut=1 + i % 3, codec="float32"):
                        tokens.append(step.token)
                        with lock:
                            counted[0] += 1
                            resumed[0] += step.resumed
                            if counted[0] == 16 * 8:
                                first.kill()
                    got[i] = tokens

            threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert first.process.poll() is not None  # it was killed mid-run
            assert got == expected  # every session complete: no step lost, no token twice
            assert resumed[0] == 8  # each session the killed server held, resumed once
    finally:
        first.close()


def test_a_step_sent_again_is_answered_again_the_same(artifact, model):
    host = LlmHost(artifact)
    try:
        edge = EdgeSide(model, 2)
        prompt = [9, 1, 8]
        first = host.step(Step("r", start=True, cut=2, hidden=edge.hidden(prompt), index=0))
        junk = EdgeSide(model, 2)  # what a replay carries is not looked at again
        again = host.step(Step("r", start=True, cut=2, hidden=junk.hidden([0]), index=0))  # a lost reply
        assert again.tokens == first.tokens
        second_hidden = edge.hidden(first.tokens)
        second = host.step(Step("r", hidden=second_hidden, index=1))
        kv = host.kv_bytes()
        assert host.step(Step("r", hidden=second_hidden, index=1)).tokens == second.tokens
        assert host.kv_bytes() == kv  # the cache did not grow a second time
        with pytest.raises(HostError, match="out of turn") as refused:
            host.step(Step("r", hidden=second_hidden, index=5))
        assert refused.value.status == 409
        third = host.step(Step("r", hidden=edge.hidden(second.tokens), index=2, end=True))
        assert first.tokens + second.tokens + third.tokens == reference(model, prompt, 3)
        # The end step's reply lost too: asked again, the same answer, from the ended sequence.
        assert host.step(Step("r", hidden=second_hidden, index=2, end=True)).tokens == third.tokens
    finally:
        host.stop()


def test_past_the_kept_cap_a_resume_sends_the_token_ids(artifact, model):
    prompt = [11, 12, 13, 14]
    first = ServerProcess(artifact)
    try:
        with LlmServer(artifact, port=0) as second:
            with EdgeLLM(artifact, [first.url, second.url], timeout_s=10, max_kept_bytes=0) as llm:
                steps = []
                for step in llm.generate(prompt, 16, cut=3, codec="float16"):
                    steps.append(step)
                    if len(steps) == 5:
                        first.kill()
            # float16 hidden states on the first server, the exact ones recomputed on the
            # second: the tokens are the float16 run's where it agrees with float32 (here, all).
            assert [s.token for s in steps] == reference(model, prompt, 16)
            assert steps[5].resumed
    finally:
        first.close()


def test_a_refusal_is_not_a_lost_server(artifact):
    """A 4xx is about the request: sending it to the next server would not help."""
    from slicer_compile.runtime.transport import ServerError

    with LlmServer(artifact, port=0) as one, LlmServer(artifact, port=0) as other:
        with EdgeLLM(artifact, [one.url, other.url]) as llm:
            with pytest.raises(ServerError, match="answered 400") as refused:
                llm._send({"hidden": np.zeros((1, 1, 3), np.float32)},
                          {"sequence_id": "z", "sequence_start": True, "cut": 2})
            assert refused.value.status == 400 and llm.failovers == 0


@pytest.mark.parametrize("mode", ["cloud only", "hand-over"])
def test_cloud_only_and_hand_over_resume_too_from_a_discovery_file(artifact, model, tmp_path, mode):
    from slicer_compile.runtime.llm.client import Plan

    prompt = [21, 22, 23]
    first = ServerProcess(artifact)
    try:
        with LlmServer(artifact, port=0) as second:
            listing = tmp_path / "servers.txt"
            listing.write_text(f"# the pool\n{first.url}\n{second.url}  # spare\n")
            with EdgeLLM(artifact, f"@{listing}", timeout_s=10) as llm:
                assert llm.servers == [first.url, second.url]
                if mode == "cloud only":
                    steps = []
                    for step in llm.generate(prompt, 12, cut=0):
                        steps.append(step)
                        if len(steps) == 4:
                            first.kill()
                    assert steps[4].resumed
                else:  # the whole hand-over is one request: the same one goes to the next
                    first.kill()
                    plan = Plan(3, 2, True, "float32", "float32", "test")
                    steps = list(llm.generate(prompt, 12, plan=plan))
                    assert steps[3].resumed and [s.mode for s in steps[2:4]] == ["edge", "server"]
            assert [s.token for s in steps] == reference(model, prompt, 12)
    finally:
        first.close()
