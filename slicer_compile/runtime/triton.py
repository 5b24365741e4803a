"""Export an artifact as a Triton Inference Server model repository.

Per materialised split ``<id>``:

    <id>_decode/   Python backend: payload bytes -> activation (triton_models/decoder.py,
                   copied as model.py and configured by its config's parameters)
    <id>_server/   the server part (onnxruntime backend; or ONNX Runtime inside the Python
                   backend, triton_models/onnx_server.py; or tensorrt_plan when the
                   artifact has server_core.plan), dynamic batching on
    <id>/          an ensemble: the model clients call, with the same inputs and
                   outputs as the embedded server's model <id>

so ``EdgeClient`` talks to Triton exactly as to ``slicer-compile serve``. Every
``config.pbtxt`` is checked by parsing it with Triton's own ModelConfig schema
(shipped in tritonclient) before the repository is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from slicer_compile import __version__
from slicer_compile.artifact import Artifact, load_artifact
from slicer_compile.errors import ArtifactError, ConfigError, SlicerCompileError
from slicer_compile.graph.codec_nodes import payload_name
from slicer_compile.runtime.parts import SERVER, part_without_codec
from slicer_compile.storage import StagedDirectory

#: The file that marks a repository slicer-compile wrote (what ``--force`` may replace).
REPOSITORY_MARKER = ".slicer-compile-repository"

_TYPE = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
         "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}

#: The Python-backend models, copied as they are into each model's version folder.
MODELS_DIR = Path(__file__).resolve().parent / "triton_models"
#: The server part's backends: Triton's own onnxruntime backend, or ONNX Runtime inside
#: the Python backend (a Triton without the onnxruntime one, as the nvidia-pytriton wheel's).
SERVER_BACKENDS = ("onnxruntime", "python")


def _parameters(values: dict) -> str:
    """config.pbtxt ``parameters`` of string values."""
    return "\n".join(f"parameters: {{ key: {json.dumps(k)} value: {{ string_value: {json.dumps(v)} }} }}"
                     for k, v in values.items())


def _model_config_schema():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise SlicerCompileError("validating Triton configs needs tritonclient: pip install '.[triton]' in the slicer-compile source tree") from None
    return model_config_pb2, text_format


def validate_config(text: str, name: str):
    """Parse a config.pbtxt with Triton's ModelConfig schema; return the message."""
    model_config_pb2, text_format = _model_config_schema()
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise SlicerCompileError(f"generated config for {name} is not a valid ModelConfig: {exc}") from None


def _dims(shape) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _tensor(kind: str, name: str, dtype: str, shape) -> str:
    return f'{kind} [ {{ name: "{name}" data_type: {_TYPE[dtype]} dims: {_dims(shape)} }} ]'


def write_repository(artifact_dir: str | Path, out_dir: str | Path, max_batch: int = 16,
                     max_queue_delay_us: int = 500, overwrite: bool = False,
                     server_backend: str = "onnxruntime", server_threads: int = 0) -> list[Path]:
    """Write the model repository; returns the config files written. ``server_backend``:
    "onnxruntime" (Triton's backend) or "python" (ONNX Runtime in the Python backend,
    ``server_threads`` intra-op threads each)."""
    import onnx

    if server_backend not in SERVER_BACKENDS:
        raise ConfigError(f"server backend must be one of {', '.join(SERVER_BACKENDS)}, got {server_backend!r}")

    artifact: Artifact = load_artifact(artifact_dir)
    splits = [s for s in artifact.splits if s.files]
    if not splits:
        raise ArtifactError(f"{artifact_dir} has no materialised split to deploy")
    written = []
    with StagedDirectory(out_dir, overwrite=overwrite, owned=is_repository_dir, what="Triton repository",
                         inputs=[artifact.path]) as staging:
        (staging / REPOSITORY_MARKER).write_text(json.dumps({"tool_version": __version__, "artifact_id": artifact.id}))
        for info in splits:
            crossing = list(info.crossing)
            activations = [t for t in crossing if t.kind == "activation"]
            sides = [t for t in crossing if t.kind == "side"]
            core = part_without_codec(artifact, info.id, SERVER)
            outputs = [(o.name, str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type))),
                        [d.dim_value if d.HasField("dim_value") else -1 for d in o.type.tensor_type.shape.dim])
                       for o in core.graph.output]
            configs = {}

            # Server part: batched, so its dims leave out the batch dimension.
            server_name = f"{info.id}_server"
            # The batched server core (no decoder inside: the Python models decode).
            plan = artifact.part_path(info.id, "server_core_plan") if "server_core_plan" in (info.files or {}) else None
            backend = 'platform: "tensorrt_plan"' if plan else f'backend: "{server_backend}"'
            engine_batch = (artifact.manifest.get("engine") or {}).get("server_core_max_batch", max_batch)
            if plan and max_batch > engine_batch:
                raise ConfigError(f"--max-batch {max_batch} exceeds the {engine_batch} that server_core.plan of "
                                  f"{info.id} was built for")
            (staging / server_name / "1").mkdir(parents=True)
            if plan:
                shutil.copy(plan, staging / server_name / "1" / "model.plan")
            else:
                onnx.save(core, str(staging / server_name / "1" / "model.onnx"))
            python_server = not plan and server_backend == "python"
            if python_server:
                shutil.copy(MODELS_DIR / "onnx_server.py", staging / server_name / "1" / "model.py")
            configs[server_name] = "\n".join([
                f'name: "{server_name}"', backend, f"max_batch_size: {max_batch}",
                *(_tensor("input", t.name, t.dtype, t.shape[1:]) for t in crossing),
                *(_tensor("output", n, d, s[1:]) for n, d, s in outputs),
                f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}",
                f'instance_group [ {{ count: 1 kind: {"KIND_CPU" if python_server else "KIND_AUTO"} }} ]',
                *([_parameters({"inputs": json.dumps([t.name for t in crossing]),
                                "outputs": json.dumps([n for n, _, _ in outputs]),
                                "threads": str(server_threads)})] if python_server else []), ""])

            # Decoders: one Python model per activation; payloads are ragged, so no batching.
            steps = []
            for t in activations:
                decode_name = f"{info.id}_decode_{len(steps)}"
                (staging / decode_name / "1").mkdir(parents=True)
                shutil.copy(MODELS_DIR / "decoder.py", staging / decode_name / "1" / "model.py")
                configs[decode_name] = "\n".join([
                    f'name: "{decode_name}"', 'backend: "python"', "max_batch_size: 0",
                    _tensor("input", payload_name(t.name), "uint8", [-1]),
                    _tensor("output", t.name, t.dtype, t.shape),
                    'instance_group [ { count: 1 kind: KIND_CPU } ]',
                    _parameters({"artifact_id": artifact.id, "input": payload_name(t.name), "output": t.name,
                                 "shape": json.dumps(list(t.shape)), "dtype": t.dtype,
                                 "centre": json.dumps(t.centre.as_dict() if t.centre else None)}), ""])
                steps.append(f'{{ model_name: "{decode_name}" model_version: -1 '
                             f'input_map {{ key: "{payload_name(t.name)}" value: "{payload_name(t.name)}" }} '
                             f'output_map {{ key: "{t.name}" value: "{t.name}" }} }}')
            server_inputs = " ".join(f'input_map {{ key: "{t.name}" value: "{t.name}" }}' for t in crossing)
            server_outputs = " ".join(f'output_map {{ key: "{n}" value: "{n}" }}' for n, _, _ in outputs)
            steps.append(f'{{ model_name: "{server_name}" model_version: -1 {server_inputs} {server_outputs} }}')

            # The ensemble clients call: same tensors as the embedded server's model.
            configs[info.id] = "\n".join([
                f'name: "{info.id}"', 'platform: "ensemble"', "max_batch_size: 0",
                *(_tensor("input", payload_name(t.name), "uint8", [-1]) for t in activations),
                *(_tensor("input", t.name, t.dtype, t.shape) for t in sides),
                *(_tensor("output", n, d, [-1] + s[1:]) for n, d, s in outputs),
                "ensemble_scheduling { step [ " + ", ".join(steps) + " ] }", ""])
            (staging / info.id / "1").mkdir(parents=True)
            for name, text in configs.items():
                validate_config(text, name)
                path = staging / name / "config.pbtxt"
                path.write_text(text)
                written.append(Path(out_dir) / name / "config.pbtxt")
        (staging / "README.md").write_text(_README.format(artifact=artifact.id, splits=", ".join(s.id for s in splits)))
    return written


def is_repository_dir(path: Path) -> bool:
    """True for a model repository slicer-compile wrote."""
    return (Path(path) / REPOSITORY_MARKER).is_file()


_README = """# Triton model repository (artifact {artifact})

Generated by `slicer-compile triton`. One ensemble per split ({splits}): the model a
client calls, named by the split id, with the same inputs and outputs as the embedded
server (`slicer-compile serve`), so `EdgeClient` works against either.

Start Triton on it. The decoder models are Python-backend models that import
slicer-compile, which is not published on a package index: mount its source tree
into the container and install it from there.

    docker run --rm -p 8000:8000 -v $PWD:/models -v /path/to/slicer-compile:/src \\
        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        bash -c "pip install /src && tritonserver --model-repository=/models"

then `slicer-compile run <artifact> --server 127.0.0.1:8000 --input x.npy`.
"""


def write_llm_repository(artifact_dir: str | Path, out_dir: str | Path, max_sessions: int = 256,
                         idle_timeout_s: float = 300.0, max_kv_bytes: int = 1 << 30, max_batch: int = 64,
                         overwrite: bool = False) -> Path:
    """A repository of one model named by the LLM artifact's id: its server side in
    Triton's Python backend (triton_models/llm_server.py) under the sequence batcher, the
    artifact copied beside it. Returns the config written."""
    from slicer_compile.llm.artifact import load_llm_artifact

    artifact = load_llm_artifact(artifact_dir)
    hidden = artifact.spec.hidden_size
    name = artifact.id
    with StagedDirectory(out_dir, overwrite=overwrite, owned=is_repository_dir, what="Triton repository",
                         inputs=[artifact.path]) as staging:
        (staging / REPOSITORY_MARKER).write_text(json.dumps({"tool_version": __version__, "artifact_id": name}))
        version = staging / name / "1"
        shutil.copytree(artifact.path, version / "artifact")
        shutil.copy(MODELS_DIR / "llm_server.py", version / "model.py")
        optional = lambda kind, tensor, dtype, dims: (  # noqa: E731
            f'{kind} [ {{ name: "{tensor}" data_type: {_TYPE[dtype]} dims: {_dims(dims)} optional: true }} ]')
        text = "\n".join([
            f'name: "{name}"', 'backend: "python"', "max_batch_size: 0",
            optional("input", "hidden", "float32", [1, -1, hidden]),
            optional("input", "hidden_payloads", "uint8", [-1]),
            optional("input", "payload_lengths", "int64", [-1]),
            optional("input", "input_ids", "int64", [1, -1]),
            optional("input", "kv", "float32", [-1, 2, 1, artifact.spec.num_kv_heads, -1, artifact.spec.head_dim]),
            optional("input", "kv_payloads", "uint8", [-1]),
            optional("input", "kv_lengths", "int64", [-1]),
            _tensor("output", "tokens", "int64", [-1]),
            # Triton keeps a sequence's slot this long between its steps (its default is 1 s).
            f"sequence_batching {{ max_sequence_idle_microseconds: {int(idle_timeout_s * 1e6)} control_input [ "
            '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }, '
            '{ name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] } ] }',
            'instance_group [ { count: 1 kind: KIND_CPU } ]',
            _parameters({"max_sessions": str(max_sessions), "idle_timeout_s": str(idle_timeout_s),
                         "max_kv_bytes": str(max_kv_bytes), "max_batch": str(max_batch)}), ""])
        validate_config(text, name)
        (staging / name / "config.pbtxt").write_text(text)
    return Path(out_dir) / name / "config.pbtxt"
