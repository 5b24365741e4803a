"""Open one split's edge or server part as a runner: the one place that knows
which file a backend runs, and that a part runs without its codec nodes where
the backend does not code inside its engines (the runtime codes in Python then)."""

from __future__ import annotations

from slicer_compile.artifact import Artifact
from slicer_compile.backends.base import Runner, RunSettings
from slicer_compile.backends.registry import get_backend
from slicer_compile.errors import ArtifactError

EDGE, SERVER = "edge", "server"


def part_without_codec(artifact: Artifact, split_id: str, part: str):
    """The ONNX part with its encoder (edge) or decoder (server) nodes removed."""
    from slicer_compile.graph.codec_nodes import strip_decoders, strip_encoders

    crossing = list(artifact.split(split_id).crossing)
    model = artifact.load_part_model(split_id, part)
    return strip_encoders(model, crossing) if part == EDGE else strip_decoders(model, crossing)


def open_part(artifact: Artifact, split_id: str, part: str, backend: str = "onnxruntime",
              settings: RunSettings = RunSettings()) -> Runner:
    """A runner (not yet active) for ``part`` ("edge" or "server") of a materialised split.

    Raises:
        ArtifactError: the split is not materialised, or lacks the backend's file.
    """
    if part not in (EDGE, SERVER):
        raise ValueError(f"part must be {EDGE!r} or {SERVER!r}, got {part!r}")
    chosen = get_backend(backend)
    name = f"{split_id}/{part}"
    if not chosen.codec_in_engine:
        return chosen.open(part_without_codec(artifact, split_id, part), name, settings)
    key = chosen.part_file_key(part)
    relative = (artifact.split(split_id).files or {}).get(key)
    if not relative or not (artifact.path / relative).is_file():
        raise ArtifactError(f"split {split_id} has no {key.replace('_', '.')} for the {chosen.name} backend: "
                            f"compile with --backend {chosen.name}")
    return chosen.open(artifact.part_path(split_id, key), name, settings)


def part_outputs(artifact: Artifact, split_id: str, part: str) -> list[tuple[str, str, list[int]]]:
    """(name, numpy dtype, shape; -1 for a symbolic dimension) of each output of an ONNX part."""
    import onnx

    model = artifact.load_part_model(split_id, part, load_external_data=False)
    outputs = []
    for value in model.graph.output:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        outputs.append((value.name, str(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims))
    return outputs
