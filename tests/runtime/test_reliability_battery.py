"""A short reliability battery: attacks beside a prober of good requests, against a
server process whose memory and threads are sampled."""

from __future__ import annotations

import pytest

from slicer_compile.compiler import compile_model
from slicer_compile.runtime.host import ServerConfig
from slicer_compile.runtime.reliability import render, run_battery
from tests.models import EXAMPLES

#: The server's resident memory may grow at most this much under the battery (the
#: 1 MiB request limit x the stalled bodies held, and decoding, with room to spare).
RSS_GROWTH_BOUND = 256 << 20
#: Threads: ONNX Runtime's, the batcher's, 32 decode workers, the event loop: bounded
#: by the configuration, not by the number of connections.
THREADS_BOUND = 96


@pytest.mark.slow
def test_attacks_beside_good_requests(tmp_path):
    artifact = compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path / "a", max_pairs=3)
    config = ServerConfig(client_timeout_s=1.0, request_timeout_s=1.0, max_connections=128, max_request_bytes=1 << 20)
    result = run_battery(artifact.path, config, rounds=2, holders=12)
    report = render(result)
    assert result.unexpected == 0, report
    assert result.probes_sent > 0 and result.probes_right == result.probes_sent, report
    assert sum(result.attacks.values()) >= 2 * (4 * 14 + 3 * 12), report
    assert result.connections_held_peak >= 24, report
    assert result.rss_peak - result.rss_baseline < RSS_GROWTH_BOUND, report
    assert result.threads_peak < THREADS_BOUND, report
