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


class Flaky:
    """A transport that fails as told: a ServerError of ``status`` (None: unreachable)."""

    def __init__(self, status=None, answer=None):
        self.status, self.answer, self.calls, self.closed = status, answer, 0, 0

    def infer(self, *args):
        self.calls += 1
        if self.answer is None:
            raise ServerError(f"status {self.status}", self.status)
        return self.answer

    def close(self):
        self.closed += 1


@pytest.mark.parametrize("status, moves", [(None, True), (503, True), (500, True), (400, False), (404, False)])
def test_a_lost_server_is_left_and_a_refusal_is_not(status, moves):
    from slicer_compile.runtime.transport import Failover

    first, second = Flaky(status), Flaky(answer="ok")
    servers, switched = Failover([first, second]), []
    if moves:
        assert servers.call(lambda t: t.infer(), lambda: switched.append(1)) == ("ok", True)
        assert servers.failovers == 1 and switched == [1] and first.closed == 1
        assert servers.call(lambda t: t.infer()) == ("ok", False)  # it stays on the one that answers
    else:
        with pytest.raises(ServerError):
            servers.call(lambda t: t.infer())
        assert servers.failovers == 0 and second.calls == 0
    everyone_lost = Failover([Flaky(None), Flaky(None)])
    with pytest.raises(ServerError):
        everyone_lost.call(lambda t: t.infer())
