"""Where a lone request runs: on the thread that decoded it (no hop to the batcher), and
over HTTP on the event loop itself when it is small and its split is cheap; anything
beside others still goes through the batcher and batches."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.codec import SlicerConfig
from slicer_compile.runtime.host import ModelHost, ServerConfig
from slicer_compile.runtime.server import SplitServer
from tests.models import EXAMPLES
from tests.runtime.test_server import artifact, deep_split  # noqa: F401 (the compiled fixture)

CONFIG = SlicerConfig(sparsity=0.75)


def edge_message(artifact, split_id: str):  # noqa: F811
    """The infer request an edge client sends for one digit at ``split_id``."""
    from slicer_compile.backends.onnxrt import OnnxrtRunner
    from slicer_compile.codec import encode
    from slicer_compile.graph.codec_nodes import payload_name
    from slicer_compile.runtime.parts import part_without_codec
    from slicer_compile.runtime.protocol import InferMessage

    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:1]
    with OnnxrtRunner(part_without_codec(artifact, split_id, "edge")) as edge:
        middle = edge.infer({"x": x})
    tensors = {payload_name(t.name) if t.kind == "activation" else t.name:
               np.frombuffer(encode(middle[t.name], CONFIG), np.uint8) if t.kind == "activation" else middle[t.name]
               for t in artifact.split(split_id).crossing}
    return InferMessage(tensors, {"slicer_artifact_id": artifact.id})


def _queued(model) -> list:
    """Record what reaches the batcher's queue."""
    seen = []
    put = model._queue.put
    model._queue.put = lambda job, *a, **k: (seen.append(job), put(job, *a, **k))[1]
    return seen


def test_a_lone_request_runs_without_the_batcher(artifact):  # noqa: F811
    host = ModelHost(artifact)
    try:
        sid = deep_split(artifact)
        model = host.model(sid)
        queued = _queued(model)
        reply = host.infer(sid, edge_message(artifact, sid))
        assert not queued and reply.parameters["batch_size"] == 1
        assert model.recent_compute_s < float("inf")  # measured: the loop may answer the next one
    finally:
        host.stop_models()


def test_requests_beside_others_go_through_the_batcher(artifact):  # noqa: F811
    host = ModelHost(artifact)
    try:
        sid = deep_split(artifact)
        model = host.model(sid)
        model._in_flight = lambda: 5  # others admitted: this one may be batched with them
        queued = _queued(model)
        host.infer(sid, edge_message(artifact, sid))
        assert len(queued) == 1
    finally:
        host.stop_models()


def test_inline_off_always_uses_the_batcher(artifact):  # noqa: F811
    host = ModelHost(artifact, ServerConfig(run_alone_inline=False))
    try:
        sid = deep_split(artifact)
        queued = _queued(host.model(sid))
        host.infer(sid, edge_message(artifact, sid))
        assert len(queued) == 1
    finally:
        host.stop_models()


def test_the_event_loop_answers_only_small_lone_cheap_requests(artifact):  # noqa: F811
    with SplitServer(artifact.path, port=0) as server:
        sid = deep_split(artifact)
        model = server.host.models[sid]
        assert not server._answer_here(sid, 1000)  # compute unknown before the first run
        model.recent_compute_s = 1e-4
        assert server._answer_here(sid, 1000)
        assert not server._answer_here(sid, server.config.inline_max_bytes + 1)
        assert not server._answer_here("nope", 10)
        model.recent_compute_s = 0.01  # a heavy split: a worker, so the loop keeps accepting
        assert not server._answer_here(sid, 1000)
        model.recent_compute_s, model._in_flight = 1e-4, lambda: 2
        assert not server._answer_here(sid, 1000)


def test_requests_beside_others_are_batched_together(artifact):  # noqa: F811
    """Eight requests while others are in flight: none runs inline, all go to the batcher,
    which (its window long, the run held until all are queued) runs them as one batch;
    each answer equals the lone request's."""
    host = ModelHost(artifact, ServerConfig(max_batch=8, max_queue_delay_s=30))
    try:
        sid = deep_split(artifact)
        model = host.model(sid)
        feeds = model.feeds_from(edge_message(artifact, sid))
        alone = model.run_or_submit(feeds)
        assert alone.done.is_set() and alone.batch_size == 1
        model._in_flight = lambda: 9
        with model._run_lock:  # the batcher collects, but cannot run, until all eight are queued
            jobs = [model.run_or_submit(feeds) for _ in range(8)]
        for job in jobs:
            assert job.done.wait(60)
        assert {job.batch_size for job in jobs} == {8}
        for job in jobs:
            for name, value in job.outputs.items():
                np.testing.assert_allclose(value, alone.outputs[name], rtol=1e-5, atol=1e-6)
    finally:
        host.stop_models()


@pytest.mark.parametrize("bad", [{"decoder": "fast"}])
def test_a_bad_decoder_choice_is_refused(artifact, bad):  # noqa: F811
    from slicer_compile.errors import ConfigError

    with pytest.raises(ConfigError, match="one of"):
        ModelHost(artifact, ServerConfig(**bad))
