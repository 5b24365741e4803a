"""The edge client: an edge runner (the edge part, then the encoder) plus a
transport that carries the request (``runtime.transport``: KServe v2 over HTTP, or
over gRPC for a ``grpc://`` address).

The same client talks to the embedded server and to a Triton deployment made by
``slicer-compile triton``: both speak KServe v2, with one model per split named by
its split id.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slicer_compile.artifact import Artifact, load_artifact
from slicer_compile.backends.registry import get_backend
from slicer_compile.codec import SlicerConfig
from slicer_compile.codec.centring import centred
from slicer_compile.codec.native import RuntimeCoder
from slicer_compile.codec.padding import masked, padded_config
from slicer_compile.codec.ops import KNOBS_INPUT, knobs_tensor
from slicer_compile.errors import ArtifactError, InputError, SlicerCompileError
from slicer_compile.graph.codec_nodes import nbytes_name, payload_name
from slicer_compile.runtime.parts import EDGE, open_part
from slicer_compile.runtime.protocol import ARTIFACT_PARAMETER, InferMessage
from slicer_compile.runtime.transport import (  # noqa: F401 (re-exported)
    DEFAULT_PORT,
    ClientAccess,
    Failover,
    ServerError,
    open_transport,
    parse_server_address,
    server_addresses,
)


_log = logging.getLogger(__name__)


def check_inputs(expected: list[dict], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs checked against the model's (the manifest's ``inputs``: name, shape,
    dtype), before anything runs. float64 arrays (numpy's default) are cast to a float32
    input, and narrower integers to wider ones, with a note; anything else is refused.

    Raises:
        InputError: a missing or unknown input, another rank or shape, another dtype.
    """
    names = [i["name"] for i in expected]
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(unknown)}; the model's inputs are {', '.join(names)}")
    checked = {}
    for spec in expected:
        name, want_dtype = spec["name"], np.dtype(spec["dtype"])
        shape = tuple(spec["shape"] or ())
        wanted = f"{want_dtype} {'x'.join(str(d) for d in shape)}"
        if name not in inputs:
            raise InputError(f"missing input {name!r} ({wanted})")
        value = np.asarray(inputs[name])
        if value.ndim != len(shape):
            hint = (" (it lacks the batch axis: np.expand_dims(x, 0))"
                    if value.ndim == len(shape) - 1 and tuple(value.shape) == shape[1:] else "")
            raise InputError(f"input {name!r} must be {wanted}, got {value.dtype} "
                             f"{'x'.join(map(str, value.shape))}{hint}")
        if any(d is not None and have != d for have, d in zip(value.shape, shape)):
            raise InputError(f"input {name!r} must be {wanted}, got {value.dtype} {'x'.join(map(str, value.shape))}")
        if value.dtype != want_dtype:
            widening_int = value.dtype.kind in "iub" and want_dtype.kind in "iu" and np.can_cast(value.dtype, want_dtype)
            if not (value.dtype == np.float64 and want_dtype.kind == "f") and not widening_int:
                raise InputError(f"input {name!r} must be {wanted}, got {value.dtype}")
            _log.warning("input %s: %s cast to %s", name, value.dtype, want_dtype)
            value = value.astype(want_dtype)
        checked[name] = value
    return checked


@dataclass
class EdgeResult:
    outputs: dict[str, np.ndarray]
    split_id: str
    config: SlicerConfig
    timings: dict = field(default_factory=dict)  # edge_s, encode_s, bytes_sent, server_s, server_compute_s, round_trip_s
    decision: object | None = None  # the selector's Decision when conditions were given


class EdgeClient:
    """Runs the edge side of an artifact against a server at ``server_url`` ("host:port"),
    or several ("A,B,…", or "@FILE" naming one per line): a request whose server is lost (unreachable, past the deadline,
    5xx or 503) goes to the next as it is, the edge part not run again (a one-shot
    request has no state on the server: sending it twice is safe)."""

    def __init__(self, artifact: str | Path | Artifact, server_url: str, timeout_s: float = 30.0,
                 backend: str = "onnxruntime", access: ClientAccess | None = None, coder: str = "auto",
                 native_build_dir: str | Path | None = None):
        self.artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        # A backend without the codec in its engines runs the edge part, then the numpy
        # encoder; one with it (TensorRT: edge.plan) encodes inside, the knobs an engine input.
        self.backend = get_backend(backend)
        self.materialised = [s for s in self.artifact.splits if s.files]
        if not self.materialised:
            raise ArtifactError(f"{self.artifact.path} has no materialised split")
        # The SLICER encoder outside an engine (codec.native.RuntimeCoder): the C++ host
        # coder where built and faster for the size (the same bytes), else numpy.
        self._coder = RuntimeCoder(coder, native_build_dir)
        self._servers = Failover([open_transport(a, timeout_s, access) for a in server_addresses(server_url)])
        self._runners: dict = {}
        self._selector = None
        self.default_config = self.artifact.codec.defaults

    # --- the edge part -------------------------------------------------------------

    def _runner(self, split_id: str):
        runner = self._runners.get(split_id)
        if runner is None:
            runner = self._runners[split_id] = open_part(self.artifact, split_id, EDGE, self.backend.name).activate()
        return runner

    def selector(self):
        """The selector over the materialised splits (what this client can run)."""
        if self._selector is None:
            from slicer_compile.select import Selector

            self._selector = Selector.from_artifact(self.artifact, splits=self.materialised)
        return self._selector

    def default_choice(self, accuracy_budget: float = 0.01):
        """The split and knobs used without conditions or a given split: the deepest
        materialised split at the highest sparsity whose calibrated fidelity stays
        within ``accuracy_budget`` (``Selector.choose_within_budget``)."""
        return self.selector().choose_within_budget(accuracy_budget)

    def infer(self, inputs: dict[str, np.ndarray], conditions=None, split: str | None = None,
              config: SlicerConfig | None = None) -> EdgeResult:
        """Run one sample end to end.

        Args:
            inputs: the model's inputs, batch of one.
            conditions: ``select.Conditions``; the selector picks split and knobs.
            split / config: a fixed split and codec config (default: the selector's
                choice without a channel, :meth:`default_choice`).
        Raises:
            InputError: an input of another name, rank, shape or dtype than the model's.
            ServerError: the server refused the request or is unreachable.
            SlicerCompileError: no feasible split for the conditions.
        """
        decision = None
        if conditions is not None:
            decision = self.selector().select(conditions)
            if not decision.feasible:
                raise SlicerCompileError(f"no feasible split: {decision.reason}")
            split, config = decision.split_id, decision.config
        elif split is None:
            decision = self.default_choice()
            split, config = decision.split_id, config or decision.config
        config = config or self.default_config
        inputs = check_inputs(self.artifact.manifest["inputs"], inputs)
        info = self.artifact.split(split)
        runner = self._runner(split)

        start = time.perf_counter()
        if self.backend.codec_in_engine:
            self._check_engine_knobs(config)
            feeds = {name: inputs[name] for name in runner.input_names if name != KNOBS_INPUT}
            # The engine masks padded rows itself (a Mul before its encoder); the knobs
            # carry the sparsity that keeps (1 - s) of the valid rows (codec.padding).
            masks = [inputs[t.mask] for t in info.activations if t.mask is not None and t.mask in inputs]
            knobs = padded_config(config, masks[0]) if masks else config
            middle = runner.infer({**feeds, KNOBS_INPUT: knobs_tensor(knobs)})
        else:
            middle = runner.infer({name: inputs[name] for name in runner.input_names})
        edge_s = time.perf_counter() - start
        tensors = {}
        start = time.perf_counter()
        for t in info.crossing:
            if t.kind != "activation":
                tensors[t.name] = middle[t.name]
            elif self.backend.codec_in_engine:  # encoded inside the engine: edge_s includes it
                count = int(middle[nbytes_name(t.name)][0])
                tensors[payload_name(t.name)] = middle[payload_name(t.name)][:count]
            else:  # the steps of the engine's encoder chain (graph.codec_nodes), in Python
                value, knobs = centred(middle[t.name], t.centre), config  # codec.centring: the residual
                if t.mask is not None:  # codec.padding: padded rows left out of the coding
                    value, knobs = masked(value, middle[t.mask]), padded_config(config, middle[t.mask])
                tensors[payload_name(t.name)] = np.frombuffer(self._coder.encode(value, knobs), dtype=np.uint8)
        encode_s = time.perf_counter() - start

        request = InferMessage(tensors, {ARTIFACT_PARAMETER: self.artifact.id}, requested_outputs=None)
        start = time.perf_counter()
        (reply, bytes_sent), _ = self._servers.call(lambda transport: transport.infer(split, request))
        round_trip = time.perf_counter() - start
        params = reply.parameters
        timings = {"edge_s": edge_s, "encode_s": encode_s, "bytes_sent": bytes_sent,
                   "payload_bytes": sum(v.nbytes for k, v in tensors.items() if k.endswith(".payload")),
                   # what the embedded server reports (a Triton reports none: None)
                   "server_s": _seconds(params.get("server_total_us")),
                   "server_compute_s": _seconds(params.get("server_compute_us")),
                   "batch_size": params.get("batch_size"), "round_trip_s": round_trip}
        return EdgeResult(reply.tensors, split, config, timings, decision)

    @property
    def transport(self):
        """The transport to the server now in use."""
        return self._servers.transport

    @property
    def failovers(self) -> int:
        """How many times a request moved on to the next server."""
        return self._servers.failovers

    def _check_engine_knobs(self, config: SlicerConfig) -> None:
        """The encoder plugin refuses knobs looser than it was sized for; say so here, clearly."""
        codec = self.artifact.codec
        if config.sparsity < codec.min_sparsity or max(config.blocks) > codec.max_blocks or config.q_bits > codec.max_q_bits:
            raise SlicerCompileError(f"codec settings {config.as_dict()} are looser than the edge engine's encoder "
                                     f"accepts (sparsity >= {codec.min_sparsity}, blocks <= {codec.max_blocks}, "
                                     f"q_bits <= {codec.max_q_bits})")

    def close(self) -> None:
        self._servers.close()

    def __enter__(self) -> "EdgeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _seconds(microseconds) -> float | None:
    return None if microseconds is None else microseconds * 1e-6
