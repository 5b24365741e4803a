"""Server metrics in the Prometheus text exposition format."""

from __future__ import annotations

import threading
import time
from collections import defaultdict


class Metrics:
    """Counters and sums, per split; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[str, int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.batches: dict[str, int] = defaultdict(int)
        self.batched_requests: dict[str, int] = defaultdict(int)
        self.compute_s: dict[str, float] = defaultdict(float)
        self.queue_s: dict[str, float] = defaultdict(float)
        self.max_batch: dict[str, int] = defaultdict(int)
        self.request_s: dict[str, float] = defaultdict(float)  # received to answered, answered requests
        self.last_request_ms: dict[str, int] = defaultdict(int)  # wall clock, ms since the epoch

    def count_request(self, split: str, seconds: float = 0.0) -> None:
        with self._lock:
            self.requests[split] += 1
            self.request_s[split] += seconds
            self.last_request_ms[split] = int(time.time() * 1000)

    def failures(self, split: str) -> int:
        with self._lock:
            return sum(n for (s, _), n in self.errors.items() if s == split)

    def snapshot(self, split: str) -> dict:
        """One split's totals (what the statistics endpoints report)."""
        with self._lock:
            return {"requests": self.requests[split], "request_s": self.request_s[split],
                    "batches": self.batches[split], "compute_s": self.compute_s[split],
                    "queue_s": self.queue_s[split], "last_request_ms": self.last_request_ms[split]}

    def count_error(self, split: str, reason: str) -> None:
        with self._lock:
            self.errors[(split, reason)] += 1

    def observe_batch(self, split: str, size: int, compute_s: float, queue_s: list[float]) -> None:
        with self._lock:
            self.batches[split] += 1
            self.batched_requests[split] += size
            self.compute_s[split] += compute_s
            self.queue_s[split] += sum(queue_s)
            self.max_batch[split] = max(self.max_batch[split], size)

    def render(self, state=None) -> str:
        with self._lock:
            lines = [
                "# HELP slicer_requests_total Inference requests answered with a result.",
                "# TYPE slicer_requests_total counter",
                *(f'slicer_requests_total{{split="{s}"}} {n}' for s, n in sorted(self.requests.items())),
                "# HELP slicer_errors_total Requests answered with an error, by reason.",
                "# TYPE slicer_errors_total counter",
                *(f'slicer_errors_total{{split="{s}",reason="{r}"}} {n}' for (s, r), n in sorted(self.errors.items())),
                "# HELP slicer_batches_total Batches run through a server part.",
                "# TYPE slicer_batches_total counter",
                *(f'slicer_batches_total{{split="{s}"}} {n}' for s, n in sorted(self.batches.items())),
                "# HELP slicer_batch_size Requests per batch (sum and count).",
                "# TYPE slicer_batch_size summary",
                *(f'slicer_batch_size_sum{{split="{s}"}} {n}' for s, n in sorted(self.batched_requests.items())),
                *(f'slicer_batch_size_count{{split="{s}"}} {n}' for s, n in sorted(self.batches.items())),
                "# HELP slicer_batch_size_max Largest batch so far.",
                "# TYPE slicer_batch_size_max gauge",
                *(f'slicer_batch_size_max{{split="{s}"}} {n}' for s, n in sorted(self.max_batch.items())),
                "# HELP slicer_compute_seconds Server-part compute time (sum over batches).",
                "# TYPE slicer_compute_seconds counter",
                *(f'slicer_compute_seconds_total{{split="{s}"}} {t:.6f}' for s, t in sorted(self.compute_s.items())),
                "# HELP slicer_queue_seconds Time requests waited for their batch (sum over requests).",
                "# TYPE slicer_queue_seconds counter",
                *(f'slicer_queue_seconds_total{{split="{s}"}} {t:.6f}' for s, t in sorted(self.queue_s.items())),
            ]
        if state is not None:
            lines += ["# HELP slicer_queue_depth Requests waiting for a batch.", "# TYPE slicer_queue_depth gauge"]
            lines += [f'slicer_queue_depth{{split="{s}"}} {m.pending()}' for s, m in sorted(state.models.items())]
        return "\n".join(lines) + "\n"
