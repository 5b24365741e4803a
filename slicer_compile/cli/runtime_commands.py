"""serve, run, triton: the split for real."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click
import numpy as np

from slicer_compile.backends.registry import DEFAULT_BACKEND
from slicer_compile.cli.compile_commands import require_backend
from slicer_compile.cli.options import (
    PORT,
    POSITIVE,
    Quantity,
    artifact_argument,
    backend_option,
    channel_options,
    verbosity_options,
)
from slicer_compile.cli.output import note
from slicer_compile.cli.select_command import conditions_from, describe
from slicer_compile.cli.status import EXIT_INFEASIBLE, EXIT_OK
from slicer_compile.codec.native import CODER_CHOICES
from slicer_compile.errors import SlicerCompileError
from slicer_compile.runtime.access import TOKEN_ENV
from slicer_compile.storage import atomic_path


def load_npy(path: Path) -> np.ndarray:
    """A .npy array, with a clear message for a missing file or another format."""
    if not path.is_file():
        raise SlicerCompileError(f"no such file: {path}")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # np.load would guess "pickle" and advise allow_pickle
            raise SlicerCompileError(f"{path} is not a .npy file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SlicerCompileError(f"cannot read {path} as a .npy array: {exc}") from None


@click.command("serve")
@artifact_argument
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True, type=PORT, help="HTTP port (0: any free port).")
@click.option("--grpc-port", type=PORT,
              help="Also serve KServe v2 gRPC on this port (tritonclient.grpc; needs the triton extra).")
@click.option("--max-batch", default=16, show_default=True, type=POSITIVE, help="Requests batched together at most.")
@click.option("--max-queue-delay", default="0.5ms", show_default=True,
              type=Quantity("time", maximum=10.0, allow_zero=True),
              help="Longest wait to fill a batch (only while other requests are in flight).")
@click.option("--max-request-bytes", default="64MiB", show_default=True,
              type=Quantity("bytes", minimum=4096, maximum=2**34), help="Larger requests get 413.")
@click.option("--max-connections", default=256, show_default=True, type=POSITIVE,
              help="Open connections (gRPC: concurrent calls) at most; beyond, 503.")
@click.option("--request-timeout", default="60s", show_default=True, type=Quantity("time", minimum=0.1, maximum=3600),
              help="A request body must arrive within this (else 408).")
@click.option("--idle-timeout", default="10s", show_default=True, type=Quantity("time", minimum=0.1, maximum=3600),
              help="Idle connections, and requests whose headers stall, are closed after this.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificate: serve HTTPS (and gRPC over TLS).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key of --tls-cert.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Require 'Authorization: Bearer <token>' (first line of this file; or ${TOKEN_ENV}).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["error", "warning", "info", "debug"]),
              help="info: one access-log line per request on stderr.")
@click.option("--decoder", default="auto", show_default=True, type=click.Choice(CODER_CHOICES),
              help="SLICER decoder: auto = the C++ host coder where build-kernels built it, else numpy.")
@click.option("--max-sessions", default=256, show_default=True, type=POSITIVE,
              help="LLM artifacts: sequences held at once; beyond, a start gets 503.")
@click.option("--session-timeout", default="300s", show_default=True,
              type=Quantity("time", minimum=0.1, maximum=86400),
              help="LLM artifacts: a sequence with no step for this long is evicted (its client is told why).")
@click.option("--max-kv-memory", default="1GiB", show_default=True, type=Quantity("bytes", minimum=1, maximum=2**44),
              help="LLM artifacts: KV-cache bytes across sequences; beyond, the least recently used are evicted.")
@click.option("--engine", type=click.Choice(["embedded", "triton"]), default="embedded", show_default=True,
              help="triton: a real Triton Inference Server on the generated repository (its HTTP and gRPC "
                   "endpoints, dynamic batching, metrics); set it up once with tools/setup_triton.py.")
@backend_option("tensorrt: each split's server.plan, decoder inside (one request at a time).")
@verbosity_options
def serve_command(artifact_dir: Path, host: str, port: int, grpc_port: int | None, max_batch: int,
                  max_queue_delay: float, max_request_bytes: float, max_connections: int, request_timeout: float,
                  idle_timeout: float, tls_cert: Path | None, tls_key: Path | None, token_file: Path | None,
                  log_level: str, decoder: str, max_sessions: int, session_timeout: float, max_kv_memory: float,
                  engine: str, backend: str) -> None:
    """Serve an artifact's split server parts (KServe v2 / Triton HTTP protocol); for an
    LLM artifact, its server-side layers for many sequences at once, token by token.

    Beyond loopback, give --tls-cert/--tls-key and a token (--token-file or
    $SLICER_SERVER_TOKEN): without them anyone who reaches the port may use it."""
    import signal

    from slicer_compile.llm.artifact import is_llm_artifact_dir
    from slicer_compile.runtime.access import Access, read_token
    from slicer_compile.runtime.server import ServerConfig, serve

    level = getattr(logging, log_level.upper())
    logging.getLogger("slicer_compile").setLevel(min(level, logging.getLogger("slicer_compile").level))
    logging.getLogger("slicer_compile.access").setLevel(level)
    require_backend(backend)
    access = Access(tls_cert, tls_key, read_token(token_file))
    if engine == "triton":
        if access.tls or access.token:
            raise SlicerCompileError("--engine triton serves plain HTTP/gRPC here: put TLS and tokens in front of "
                                     "it, or use the embedded engine")
        _serve_with_triton(artifact_dir, host, port, grpc_port, max_batch, max_queue_delay,
                           dict(max_sessions=max_sessions, idle_timeout_s=session_timeout,
                                max_kv_bytes=int(max_kv_memory)))
        return
    if is_llm_artifact_dir(artifact_dir):
        from slicer_compile.runtime.llm.host import LlmServerConfig
        from slicer_compile.runtime.llm.server import LlmServer

        if grpc_port is not None or backend != DEFAULT_BACKEND:
            raise SlicerCompileError("an LLM artifact is served over HTTP with ONNX Runtime (no --grpc-port, "
                                     "no --backend tensorrt yet)")
        config = LlmServerConfig(max_sessions=max_sessions, idle_timeout_s=session_timeout,
                                 max_kv_bytes=int(max_kv_memory), max_batch=max_batch, decoder=decoder)
        server = LlmServer(artifact_dir, host, port, config, access=access, max_request_bytes=int(max_request_bytes),
                           request_timeout_s=request_timeout)
        signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
        click.echo(f"serving LLM artifact {server.host.artifact.id} ({server.host.spec.num_layers} layers) on "
                   f"{'https' if access.tls else 'http'}://{server.url} (/v2/models/llm/infer, /metrics); "
                   "Ctrl-C stops", err=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        return
    config = ServerConfig(max_batch=max_batch, max_queue_delay_s=max_queue_delay,
                          max_request_bytes=int(max_request_bytes), max_connections=max_connections,
                          request_timeout_s=request_timeout, client_timeout_s=idle_timeout, backend=backend,
                          decoder=decoder)
    server = serve(artifact_dir, host, port, config, grpc_port=grpc_port, access=access)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    if host not in ("127.0.0.1", "localhost", "::1") and not (access.tls and access.token):
        note(f"listening on {host} without {'TLS' if not access.tls else 'a token'}: anyone who reaches the port "
             "can use it (see --tls-cert/--tls-key and --token-file)")
    grpc = f" and gRPC {server.grpc.url}" if server.grpc is not None else ""
    click.echo(f"serving {', '.join(server.models)} of artifact {server.artifact.id} on {server.scheme}://"
               f"{server.url}{grpc} (/v2/models/<split>/infer, /metrics); Ctrl-C stops after in-flight requests",
               err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def json_steps_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON (no streaming).")(command)


@click.command("generate")
@artifact_argument
@click.option("--server", "server_url", required=True,
              help="host:port of slicer-compile serve OUT_LM/ (https:// for TLS); several, A,B,… or @FILE (one per "
                   "line): a lost server's sequence resumes on the next.")
@click.option("--max-kept", type=Quantity("bytes", minimum=0, maximum=2**40),
              help="What the client keeps to resume elsewhere at most (default: no cap); past it, a resume sends the "
                   "token ids and the next server recomputes.")
@click.option("--transport", type=click.Choice(["http", "stream"]), default="http", show_default=True,
              help="http: a KServe v2 request per token; stream: one WebSocket, the codec's session header once "
                   "and a compact frame per token (per-token splits; a hand-over goes over http).")
@click.option("--step-timeout", default="60s", show_default=True, type=Quantity("time", minimum=0.01, maximum=3600),
              help="A step not answered within this counts its server as lost.")
@click.option("--prompt", required=True, help="Text (a byte-level model), or token ids: 1,2,3.")
@click.option("--max-tokens", default=64, show_default=True, type=POSITIVE, help="Tokens to generate.")
@click.option("--cut", type=click.IntRange(min=0), help="Per-token split at this layer boundary (default: half the layers here).")
@click.option("--codec", help="Per-token codec (float32 float16 int8 zstd tabq slicer-0.5 slicer-0.75 slicer-0.9 "
                              "dense-6 dense-4 dense-3; default: the fewest calibrated bits within --accuracy-budget).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Send this bearer token (first line of the file; or ${TOKEN_ENV}).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate that signed the server's (default: the system's).")
@channel_options(required=False)
@json_steps_option
@verbosity_options
def generate_command(artifact_dir: Path, server_url: str, max_kept: float | None, transport: str,
                     step_timeout: float, prompt: str,
                     max_tokens: int, cut: int | None,
                     codec: str | None, token_file: Path | None, tls_ca: Path | None, bandwidth: float,
                     snr_db: float | None, deadline: float | None, memory: float, epsilon: float,
                     accuracy_budget: float, as_json: bool) -> None:
    """Generate with an LLM artifact split with --server, streaming the tokens.

    With --snr-db and --deadline the selector chooses the mode (tokens made here
    first, the hand-over layer, whether the KV cache travels: SLICER Eq. 5-6 with
    early exit); otherwise every token is split at --cut."""
    import json
    import sys

    from slicer_compile.runtime.access import read_token
    from slicer_compile.runtime.llm.client import EdgeLLM
    from slicer_compile.runtime.transport import ClientAccess

    conditions = None
    if snr_db is not None or deadline is not None:
        if snr_db is None or deadline is None:
            raise SlicerCompileError("the selector needs both --snr-db and --deadline")
        if cut is not None:
            raise SlicerCompileError("give --cut or the conditions (--snr-db, --deadline), not both")
        conditions = conditions_from(bandwidth, snr_db, None, epsilon, deadline, memory, None, accuracy_budget)
    ids = [int(t) for t in prompt.split(",")] if prompt.replace(",", "").isdigit() and "," in prompt else prompt
    access = ClientAccess(read_token(token_file), tls_ca)
    with EdgeLLM(artifact_dir, server_url, timeout_s=step_timeout, access=access,
                 max_kept_bytes=None if max_kept is None else int(max_kept), transport=transport) as llm:
        plan = llm.plan(max_tokens, conditions, cut, codec)
        click.echo(f"{plan.reason}; per-token codec {plan.codec}", err=True)
        steps = []
        for step in llm.generate(ids, max_tokens, plan=plan):
            steps.append(step)
            if as_json:
                continue
            text = bytes([step.token]).decode("utf-8", "replace") if llm.spec.vocab_size == 256 else f"{step.token} "
            sys.stdout.write(text)
            sys.stdout.flush()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(s) for s in steps]))
        return
    sent = sum(s.sent_bytes for s in steps)
    click.echo("", err=False)
    resumed = sum(s.resumed for s in steps)
    click.echo(f"{len(steps)} tokens ({', '.join(f'{n} {m}' for m, n in _modes(steps))}), "
               + (f"resumed on another server {resumed}x, " if resumed else "") +
               f"{sum(s.seconds for s in steps) * 1e3 / len(steps):.2f} ms/token, {sent / len(steps):.0f} request "
               "bytes/token", err=True)


def _modes(steps) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.mode] = counts.get(s.mode, 0) + 1
    return list(counts.items())


@click.command("run")
@artifact_argument
@click.option("--server", "server_url", required=True,
              help="host:port of slicer-compile serve or Triton (host alone: port 8700; https://, grpc://, "
                   "grpcs:// as named); several, A,B,… or @FILE (one per line): a lost server's request goes to "
                   "the next.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Send this bearer token (first line of the file; or ${TOKEN_ENV}).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate that signed the server's (default: the system's).")
@click.option("--input", "input_paths", multiple=True, required=True,
              help="Input .npy (NAME=path.npy for a model with several inputs).")
@click.option("--split", "split_id", help="Split to use (default: the selector's choice).")
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), help="Codec sparsity (default: the selector's).")
@channel_options(required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the first output .npy.")
@click.option("--encoder", default="auto", show_default=True, type=click.Choice(CODER_CHOICES),
              help="SLICER encoder: auto = the C++ host coder where build-kernels built it, else numpy.")
@backend_option("tensorrt: the split's edge.plan, encoder inside.")
@verbosity_options
def run_command(artifact_dir: Path, server_url: str, token_file: Path | None, tls_ca: Path | None,
                input_paths: tuple[str, ...], split_id: str | None,
                sparsity: float | None, bandwidth: float, snr_db: float | None, deadline: float | None,
                memory: float, epsilon: float, accuracy_budget: float, output: Path | None, encoder: str,
                backend: str) -> int:
    """Run one input through the split: edge part here, server part on --server.

    Without --split, and without --snr-db/--deadline, the split is the deepest one
    whose calibrated fidelity stays within --accuracy-budget, at the highest
    sparsity that does (fewest bytes); the output says which, and its fidelity.
    Exit status 3 when no split meets --snr-db/--deadline."""
    from slicer_compile.runtime.access import read_token
    from slicer_compile.runtime.client import ClientAccess, EdgeClient, check_inputs

    require_backend(backend)
    client = EdgeClient(artifact_dir, server_url, backend=backend,
                        access=ClientAccess(read_token(token_file), tls_ca), coder=encoder)
    expected = client.artifact.manifest["inputs"]
    names = [i["name"] for i in expected]
    inputs = {}
    for spec in input_paths:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name = name or (names[0] if len(names) == 1 else "")
        if name not in names:
            raise SlicerCompileError(f"give inputs as NAME=path.npy with NAME one of {names}")
        inputs[name] = load_npy(Path(path))
    inputs = check_inputs(expected, inputs)  # before any edge work: rank, shape, dtype
    conditions, decision = None, None
    if snr_db is not None or deadline is not None:
        if snr_db is None or deadline is None:
            raise click.UsageError("--snr-db and --deadline go together")
        conditions = conditions_from(bandwidth, snr_db, None, epsilon, deadline, memory, None, accuracy_budget)
        decision = client.selector().select(conditions)
        if not decision.feasible:
            click.echo(describe(decision)[0])
            return EXIT_INFEASIBLE
    elif split_id is None:
        decision = client.default_choice(accuracy_budget)
    if decision is not None:
        split_id = decision.split_id
        fidelity = ("fidelity unknown (compiled without --calib)" if decision.fidelity is None
                    else f"calibrated fidelity {decision.fidelity:.4f}")
        note(f"split {split_id} at sparsity {decision.config.sparsity:g}: {decision.reason}; {fidelity}")
    base = decision.config if decision is not None else client.default_config
    config = base if sparsity is None else dataclasses.replace(base, sparsity=sparsity)
    with client:
        result = client.infer(inputs, split=split_id, config=config)
    t = result.timings
    for name, value in result.outputs.items():
        summary = f"argmax {int(value.reshape(len(value), -1)[0].argmax())}" if value.ndim == 2 else ""
        click.echo(f"{name}: {value.dtype}{tuple(value.shape)} {summary}")
    click.echo(f"split {result.split_id}, sparsity {result.config.sparsity:g}: edge {t['edge_s'] * 1e3:.3f} ms, "
               f"encode {t['encode_s'] * 1e3:.3f} ms, sent {t['bytes_sent']} bytes, server {t['server_s'] * 1e3:.3f} ms "
               f"(compute {t['server_compute_s'] * 1e3:.3f}), round trip {t['round_trip_s'] * 1e3:.3f} ms")
    if output is not None:
        with atomic_path(output) as tmp, open(tmp, "wb") as f:
            np.save(f, next(iter(result.outputs.values())))
    return EXIT_OK


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _serve_with_triton(artifact_dir: Path, host: str, port: int, grpc_port: int | None, max_batch: int,
                       max_queue_delay: float, llm_options: dict) -> None:
    import signal
    import tempfile

    from slicer_compile.llm.artifact import is_llm_artifact_dir
    from slicer_compile.runtime.triton import write_llm_repository, write_repository
    from slicer_compile.runtime.triton_server import TritonServer, TritonUnavailable, has_backend

    # The wheel's Triton has no onnxruntime backend: ONNX Runtime in its Python backend then.
    server_backend = "onnxruntime" if has_backend("onnxruntime") else "python"
    with tempfile.TemporaryDirectory(prefix="slicer-triton-") as tmp:
        if is_llm_artifact_dir(artifact_dir):  # its sessions under Triton's sequence batcher
            server_backend = "python"
            write_llm_repository(artifact_dir, Path(tmp) / "repo", max_batch=max_batch, **llm_options)
        else:
            write_repository(artifact_dir, Path(tmp) / "repo", max_batch=max_batch,
                             max_queue_delay_us=int(max_queue_delay * 1e6), server_backend=server_backend)
        try:
            triton = TritonServer(Path(tmp) / "repo", http_port=port, grpc_port=grpc_port or 0, host=host)
        except TritonUnavailable as exc:
            raise SlicerCompileError(f"cannot start Triton: {exc}") from None
        signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl-C: out of the wait, then the stop below
        click.echo(f"Triton serving artifact {artifact_dir} on http://{triton.http_url} and gRPC {triton.grpc_url} "
                   f"(server parts: {server_backend} backend; log {triton.log_path}); Ctrl-C stops", err=True)
        try:
            triton.wait()
        except KeyboardInterrupt:
            pass
        finally:
            triton.stop()


@click.command("triton")
@artifact_argument
@click.option("-o", "--output", "repo_dir", required=True, type=click.Path(path_type=Path), help="Model repository.")
@click.option("--max-batch", default=16, show_default=True, type=POSITIVE)
@click.option("--server-backend", type=click.Choice(["onnxruntime", "python"]), default="onnxruntime",
              show_default=True, help="The server parts' backend: Triton's onnxruntime, or ONNX Runtime inside "
                                      "the Python backend (a Triton without the onnxruntime one).")
@click.option("--force", is_flag=True,
              help="Replace the repository if slicer-compile wrote it (never anything else).")
@verbosity_options
def triton_command(artifact_dir: Path, repo_dir: Path, max_batch: int, server_backend: str, force: bool) -> None:
    """Write a Triton model repository (decoder + server part ensembles).

    Needs the triton extra (pip install '.[triton]' in the source tree): its configs
    are validated against Triton's ModelConfig schema from tritonclient."""
    from slicer_compile.llm.artifact import is_llm_artifact_dir
    from slicer_compile.runtime.triton import write_llm_repository, write_repository

    if is_llm_artifact_dir(artifact_dir):
        config = write_llm_repository(artifact_dir, repo_dir, overwrite=force)
        click.echo(f"wrote {config.parent.name}, the LLM's server side under Triton's sequence batcher, to "
                   f"{repo_dir}/ (config validated against Triton's ModelConfig)")
        return
    written = write_repository(artifact_dir, repo_dir, max_batch=max_batch, overwrite=force,
                               server_backend=server_backend)
    click.echo(f"wrote {len(written)} models to {repo_dir}/ (configs validated against Triton's ModelConfig); "
               f"see {repo_dir}/README.md to start Triton")


COMMANDS = [serve_command, run_command, generate_command, triton_command]
