"""bench codec | rd | serve | llm | tensorrt."""

from __future__ import annotations

from pathlib import Path

import click

from slicer_compile.cli.compile_commands import require_backend
from slicer_compile.cli.options import POSITIVE, NumberList, artifact_argument, json_option, verbosity_options
from slicer_compile.cli.output import Column, print_json, print_table, stderr_console


@click.group("bench")
def bench() -> None:
    """Benchmarks: codec size and speed; server load; TensorRT engine pairs.

    --json prints the rows as JSON on stdout instead of the table (progress goes to
    stderr): slicer-compile bench codec --json > bench.json"""


@bench.command("codec")
@click.option("--sizes", default="4096,204800,1048576", show_default=True, type=NumberList(int, minimum=1),
              help="Tensor sizes (elements).")
@click.option("--sparsities", default="0.5,0.75,0.9,0.95,0.99", show_default=True,
              type=NumberList(float, minimum=0, maximum=1, max_open=True), help="SLICER sparsities, in [0, 1).")
@click.option("--repeat", default=5, show_default=True, type=POSITIVE, help="Timed runs per measurement (median).")
@click.option("--data", default="gaussian", show_default=True, type=click.Choice(["gaussian", "relu"]),
              help="Input tensors.")
@click.option("--seed", default=0, show_default=True, type=int)
@json_option("the rows")
@verbosity_options
def bench_codec(sizes: list[int], sparsities: list[float], repeat: int, data: str, seed: int, as_json: bool) -> None:
    """Bits per element, position bits vs the information bound, and encode/decode
    speed of the SLICER codec, TS + TAB-Q and the baselines, measured in one run."""
    from slicer_compile.codec.bench import run_codec_benchmark

    with stderr_console().status("measuring") as status:
        rows = run_codec_benchmark(sizes, sparsities, repeat=repeat, data=data, seed=seed,
                                   progress=lambda what: status.update(f"measuring {what}"))
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    columns = [Column("elements", 100), Column("codec", 100, "left"), Column("s", 95), Column("bits/elem", 98),
               Column("position bits / bound", 40), Column("value bits", 30), Column("header bits", 35),
               Column("framing overhead", 50), Column("encode Melem/s", 90), Column("decode Melem/s", 90),
               Column("rmse", 80)]
    table_rows = [[
        str(r.elements), r.codec, "" if r.sparsity is None else f"{r.sparsity:g}", f"{r.bits_per_element:.3f}",
        "" if r.position_overhead is None else f"{r.position_bits} / {r.position_bound_bits:.0f} ({r.position_overhead:+.2%})",
        str(r.value_bits), str(r.header_bits),
        "" if r.content_overhead is None else f"{r.content_overhead:+.2%}",
        f"{r.encode_melem_s:.1f}", f"{r.decode_melem_s:.1f}", f"{r.rmse:.4g}",
    ] for r in rows]
    print_table(f"codec benchmark ({data} float32, median of {repeat})", columns, table_rows,
                caption="framing overhead: total payload bits over the content bits (positions + values), i.e. "
                        "what the header, block table and section lengths add")


@bench.command("wire")
@click.option("--elements", default=4096, show_default=True, type=POSITIVE, help="Values per token.")
@click.option("--sparsities", default="0.95,0.99", show_default=True,
              type=NumberList(float, minimum=0, maximum=1, max_open=True), help="SLICER sparsities, in [0, 1).")
@click.option("--tokens", default=64, show_default=True, type=POSITIVE, help="Tokens in the sequence.")
@click.option("--data", default="gaussian", show_default=True, type=click.Choice(["gaussian", "relu"]),
              help="Token tensors.")
@click.option("--seed", default=0, show_default=True, type=int)
@json_option("the rows")
@verbosity_options
def bench_wire(elements: int, sparsities: list[float], tokens: int, data: str, seed: int, as_json: bool) -> None:
    """Bytes per token of a version-1 payload against the stream form's frame (the
    session header once), and what the stream's float16 tables cost in fidelity."""
    from slicer_compile.codec.bench import run_wire_benchmark

    with stderr_console().status("measuring"):
        rows = run_wire_benchmark(elements, sparsities, tokens, data, seed)
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    print_table(f"per-token wire: {tokens} tokens of {elements} {data} float32 values", [
        Column("codec", 100, "left"), Column("s", 95), Column("payload B/token (v1)", 98),
        Column("frame B/token", 99), Column("frame / payload", 90), Column("frame overhead B", 60),
        Column("header B, once", 50), Column("narrow tables", 40), Column("rel. MSE v1", 80),
        Column("rel. MSE stream", 80), Column("MSE change", 90), Column("MSE change, kept values", 70)], [
        [r.codec, "" if r.sparsity is None else f"{r.sparsity:g}", f"{r.payload_bytes:.1f}", f"{r.frame_bytes:.1f}",
         f"{r.frame_bytes / r.payload_bytes:.3f}", str(r.frame_overhead_bytes), str(r.session_header_bytes),
         f"{r.narrow_tables:.0%}", f"{r.relative_mse_v1:.4g}", f"{r.relative_mse_stream:.4g}",
         f"{r.mse_change:+.4%}", f"{r.kept_mse_change:+.3%}"] for r in rows],
        caption="frame overhead: the tag and CRC a frame adds to the codec's content; rel. MSE: squared error over "
                "the tokens' energy; kept values: the error at the positions version 1 kept (SLICER's quantisation "
                "error alone)")


@bench.command("rd")
@click.argument("models", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--calib", "calibs", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Samples (.npz) for the model of the same position (default: generated inputs).")
@click.option("--samples", default=4, show_default=True, type=POSITIVE, help="Samples per tensor, each coded alone.")
@click.option("--tensors", default=3, show_default=True, type=POSITIVE, help="Cut tensors per model, spread over its depth.")
@json_option("the points and the summary")
@verbosity_options
def bench_rd(models: tuple[Path, ...], calibs: tuple[Path, ...], samples: int, tensors: int, as_json: bool) -> None:
    """Rate-distortion: the codec menu (SLICER, TS+TAB-Q, dense) against the baselines
    (float16, int8, uniform b-bit over min..max or clipped, with zstd), on the tensors
    the models' cuts would send; per budget of bits per element, each side's best.

    Without MODELS: the bundled examples (examples/digits_cnn.onnx, resnet_dag.onnx,
    transformer.onnx, with their samples where bundled)."""
    from slicer_compile.codec.rd import measure, summary
    from slicer_compile.compiler import capture_activations
    from slicer_compile.errors import ConfigError

    if not models:
        from slicer_compile.native.locations import source_root

        root = source_root()
        if root is None or not (root / "examples").is_dir():
            raise ConfigError("no bundled examples here: give the models to measure")
        examples = root / "examples"
        models = tuple(examples / n for n in ("digits_cnn.onnx", "resnet_dag.onnx", "transformer.onnx"))
        calibs = tuple(examples / n if (examples / n).is_file() else None
                       for n in ("digits_calib.npz", "resnet_dag_calib.npz", "transformer_calib.npz"))
    if len(calibs) > len(models):
        raise ConfigError(f"{len(calibs)} --calib for {len(models)} model(s)")
    captured = {}
    with stderr_console().status("bench rd") as status:
        for i, model in enumerate(models):
            status.update(f"bench rd: tensors of {model.name}")
            calib = calibs[i] if i < len(calibs) else None
            for name, arrays in capture_activations(model, calib, samples, tensors).items():
                captured[f"{model.stem}:{name}"] = arrays
        points = measure(captured, progress=lambda what: status.update(f"bench rd: {what}"))
    rows = summary(points)
    if as_json:
        print_json({"points": [p.__dict__ for p in points], "summary": rows})
        return
    shapes = {name: "x".join(map(str, arrays[0].shape)) for name, arrays in captured.items()}
    print_table("bench rd: the menu's best against the baselines' best, per budget", [
        Column("tensor", 100, "left"), Column("bits/elem ≤", 99), Column("menu", 90, "left"),
        Column("rel MSE", 95), Column("baseline", 80, "left"), Column("rel MSE", 94), Column("menu / baseline", 98)], [
        [f"{r['tensor']} [{shapes[r['tensor']]}]", f"{r['budget']:g}", r["menu"] or "-",
         "-" if r["menu_relative_mse"] is None else f"{r['menu_relative_mse']:.3g}", r["baseline"] or "-",
         "-" if r["baseline_relative_mse"] is None else f"{r['baseline_relative_mse']:.3g}",
         "-" if r["menu_relative_mse"] is None or r["baseline_relative_mse"] is None
         else f"{r['menu_over_baseline']:.2f}"] for r in rows],
        caption="relative MSE: squared error over the tensor's energy, samples coded one by one; bits: whole payloads")


@bench.command("serve")
@artifact_argument
@click.option("--clients", default="1,4,16,64", show_default=True, type=NumberList(int, minimum=1),
              help="Client counts.")
@click.option("--requests", default=50, show_default=True, type=POSITIVE, help="Requests per client.")
@click.option("--splits", help="Split ids (default: every materialised split).")
@click.option("--servers", default=1, show_default=True, type=POSITIVE,
              help="Servers on loopback ports, the clients spread across them.")
@click.option("--engine", type=click.Choice(["embedded", "triton"]), default="embedded", show_default=True,
              help="triton: real Triton servers on the generated repository (tools/setup_triton.py).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG (default: OUT_DIR/plots/serve_scaling.png).")
@json_option("the rows")
@verbosity_options
def bench_serve(artifact_dir: Path, clients: list[int], requests: int, splits: str | None, servers: int, engine: str,
                plot_path: Path | None, as_json: bool) -> None:
    """Concurrent edge clients on loopback: throughput, latency and server time per split."""
    from slicer_compile.runtime.loadtest import plot_load, rows_as_dicts, run_load

    with stderr_console().status("load") as status:  # Triton missing: TritonUnavailable, one line
        rows = run_load(artifact_dir, clients, requests, splits.split(",") if splits else None,
                        progress=lambda what: status.update(f"load: {what}"), servers=servers, engine=engine)
    plot = plot_load(rows, plot_path or Path(artifact_dir) / "plots" / "serve_scaling.png")
    click.echo(f"wrote {plot}", err=True)
    if as_json:
        print_json(rows_as_dicts(rows))
        return
    columns = [Column("split", 100, "left"), Column("edge FLOPs", 40), Column("clients", 99),
               Column("answered", 95), Column("req/s", 90), Column("p50 ms", 85), Column("p99 ms", 80),
               Column("server compute µs/req", 70), Column("mean batch", 50), Column("bytes/req", 60)]
    print_table(f"bench serve: {requests} requests per client, {servers} {engine} server(s)", columns, [[
        r.split_id, f"{100 * r.edge_flops_share:.1f}%", str(r.clients), f"{r.answered}/{r.requests}",
        f"{r.throughput_rps:.0f}", f"{r.round_trip_p50_ms:.2f}", f"{r.round_trip_p99_ms:.2f}",
        f"{r.server_compute_us:.1f}", f"{r.mean_batch:.1f}", f"{r.bytes_sent:.0f}"] for r in rows])


@bench.command("llm")
@artifact_argument
@click.option("--clients", default="1,4,16,64", show_default=True, type=NumberList(int, minimum=1),
              help="Clients at once.")
@click.option("--prompts", default=64, show_default=True, type=POSITIVE, help="Prompts in the workload.")
@click.option("--tokens", default=64, show_default=True, type=POSITIVE, help="Tokens generated per prompt.")
@click.option("--prompt-tokens", default=16, show_default=True, type=POSITIVE, help="Tokens per prompt.")
@click.option("--cuts", type=NumberList(int, minimum=0), help="Layer boundaries (default: 0, cloud only, and every one).")
@click.option("--link-cut", type=int, help="The cut of the link table (default: half the layers on the edge).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG (default: OUT_DIR/plots/llm_server_time.png).")
@json_option("the rows")
@verbosity_options
def bench_llm(artifact_dir: Path, clients: list[int], prompts: int, tokens: int, prompt_tokens: int,
              cuts: list[int] | None, link_cut: int | None, plot_path: Path | None, as_json: bool) -> None:
    """Server compute per token against clients (cloud only and splits at increasing
    depth), and bytes and ms per token on the link per mode."""
    from slicer_compile.errors import ConfigError
    from slicer_compile.llm.artifact import load_llm_artifact
    from slicer_compile.runtime.llm.loadtest import link, plot_server_time, rows_as_dicts, server_time
    from slicer_compile.runtime.llm.server import LlmServer

    artifact = load_llm_artifact(artifact_dir)
    layers = artifact.spec.num_layers
    cuts = cuts if cuts is not None else list(range(layers + 1))
    link_cut = layers // 2 if link_cut is None else link_cut
    if any(c > layers for c in cuts + [link_cut]) or link_cut < 0:
        raise ConfigError(f"cuts are layer boundaries 0..{layers}")
    if prompt_tokens + tokens > artifact.manifest["max_tokens"] + 1:
        raise ConfigError(f"{prompt_tokens} + {tokens} tokens exceed the artifact's W̄ = {artifact.manifest['max_tokens']}")
    with stderr_console().status("bench llm") as status:
        rows = server_time(artifact_dir, clients, cuts, prompts, tokens, prompt_tokens,
                           progress=lambda what: status.update(f"bench llm: {what}"))
        with LlmServer(artifact_dir, port=0) as server:
            links = link(artifact_dir, server.url, link_cut, min(tokens, 32),
                         progress=lambda what: status.update(f"bench llm, link: {what}"))
    plot = plot_server_time(rows, plot_path or Path(artifact_dir) / "plots" / "llm_server_time.png")
    click.echo(f"wrote {plot}", err=True)
    if as_json:
        print_json({"server_time": rows_as_dicts(rows), "link": rows_as_dicts(links)})
        return
    print_table(f"bench llm: {prompts} prompts x {tokens} tokens, clients in lockstep", [
        Column("cut", 100), Column("clients", 99), Column("tokens", 60), Column("server s", 95),
        Column("server ms/token", 98), Column("mean batch", 80), Column("vs cloud only", 97), Column("exact", 50)], [
        ["cloud only" if r.cut == 0 else str(r.cut), str(r.clients), str(r.tokens), f"{r.server_s:.3f}",
         f"{r.server_ms_per_token:.4f}", f"{r.mean_batch:.1f}", f"{r.vs_cloud_only:.2f}x", "yes" if r.exact else "NO"]
        for r in rows], caption="server compute only (the edge's hidden states made beforehand); exact: every "
                                "token the unsplit model's")
    print_table(f"the link at cut {link_cut}, one client (loopback, bytes counted at the socket)", [
        Column("mode", 100, "left"), Column("transport", 60, "left"), Column("client B/token", 95),
        Column("payload B/token", 90), Column("socket up B/step", 95), Column("socket down B/step", 95),
        Column("socket B/token, all", 94), Column("ms/token", 98), Column("agreement", 70)], [
        [r.mode, r.transport, f"{r.request_bytes_per_token:.0f}", f"{r.payload_bytes_per_token:.0f}",
         f"{r.socket_up_per_step:.0f}", f"{r.socket_down_per_step:.0f}", f"{r.socket_per_token:.0f}",
         f"{r.ms_per_token:.2f}", f"{r.token_agreement:.3f}"] for r in links],
        caption="client B/token: request bodies (http) or frames and their WebSocket framing (stream); socket: "
                "what crossed a counting proxy, per decode step (median) and over the whole sequence both ways "
                "(connection, prompt and session header included); agreement: with the raw split's tokens")


@bench.command("tensorrt")
@artifact_argument
@click.option("--repeat", default=50, show_default=True, type=POSITIVE, help="Timed runs per measurement (median).")
@click.option("--splits", help="Split ids (default: every split with engines).")
@json_option("the rows")
@verbosity_options
def bench_tensorrt(artifact_dir: Path, repeat: int, splits: str | None, as_json: bool) -> None:
    """Per split of a --backend tensorrt artifact, on this GPU: edge and server engine
    latency, CUDA codec time on the real activation, and the bytes that cross."""
    from slicer_compile.runtime.engine_bench import run_tensorrt_benchmark

    require_backend("tensorrt")
    with stderr_console().status("timing engines"):
        rows = run_tensorrt_benchmark(artifact_dir, repeat, splits.split(",") if splits else None)
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    columns = [Column(name, keep) for name, keep in (
        ("split", 100), ("edge ms", 90), ("server ms", 90), ("encode ms", 80), ("decode ms", 80), ("elements", 40),
        ("payload B", 70), ("raw B", 50), ("ratio", 60))]
    table_rows = []
    for r in rows:
        codec = ("", "") if r.encode_ms is None else (f"{r.encode_ms:.3f}", f"{r.decode_ms:.3f}")
        table_rows.append([r.split, f"{r.edge_ms:.3f}", f"{r.server_ms:.3f}", *codec, str(r.activation_elements),
                           str(r.payload_bytes), str(r.raw_bytes),
                           f"{r.raw_bytes / r.payload_bytes:.1f}x" if r.payload_bytes else ""])
    print_table(f"bench tensorrt: median of {repeat}", columns, table_rows)


COMMANDS = [bench]
