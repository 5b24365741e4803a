"""One-shot requests survive a server loss: the client sends the same encoded request
to the next server (the edge part not run again) after a connection error, a deadline
or a 5xx/503; a refusal (4xx) is not retried."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from slicer_compile.runtime.client import EdgeClient, ServerError
from slicer_compile.runtime.server import SplitServer
from tests.models import EXAMPLES
from tests.runtime.servers import ServerProcess
from tests.runtime.test_server import CONFIG, artifact, deep_split  # noqa: F401 (fixture)


def test_clients_lose_no_request_when_one_of_two_servers_dies(artifact):
    sid = deep_split(artifact)
    x = np.load(EXAMPLES / "digits_calib.npz")["x"][:8]
    first = ServerProcess(artifact.path)
    try:
        with SplitServer(artifact.path, port=0) as second:
            with EdgeClient(artifact.path, second.url) as alone:
                expected = [alone.infer({"x": x[i:i + 1]}, split=sid, config=CONFIG).outputs for i in range(8)]
            answered, failovers, lock = [0], [0], threading.Lock()

            def client(c):
                servers = f"{first.url},{second.url}" if c % 2 == 0 else f"{second.url},{first.url}"
                with EdgeClient(artifact.path, servers, timeout_s=10) as edge:
                    for r in range(25):
                        result = edge.infer({"x": x[r % 8: r % 8 + 1]}, split=sid, config=CONFIG)
                        for name, value in expected[r % 8].items():
                            np.testing.assert_array_equal(result.outputs[name], value)
                        with lock:
                            answered[0] += 1
                            if answered[0] == 100:
                                first.kill()
                    with lock:
                        failovers[0] += edge.failovers

            threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert answered[0] == 200 and first.process.poll() is not None
        assert failovers[0] == 4  # each client that had the killed server first moved once
    finally:
        first.close()


def test_a_refused_request_is_not_sent_to_the_next_server(artifact):
    sid = deep_split(artifact)
    with SplitServer(artifact.path, port=0) as one, SplitServer(artifact.path, port=0) as other:
        with EdgeClient(artifact.path, f"{one.url},{other.url}") as edge:
            from slicer_compile.runtime.protocol import InferMessage

            with pytest.raises(ServerError, match="answered 4") as refused:
                edge._send(sid, InferMessage({"nonsense": np.zeros(3, np.float32)}, {}))
            assert refused.value.status // 100 == 4 and edge.failovers == 0
