"""An LLM artifact on disk: the manifest `slicer-compile llm` writes, checked on load,
and its parts (each checked against its SHA-256 digest before it is used)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from slicer_compile.errors import ArtifactError
from slicer_compile.llm.export import EMBED, HEAD, LlmParts
from slicer_compile.llm.layout import LLM_KIND, LLM_SCHEMA_VERSION, MANIFEST, edge_layer_name, layer_name
from slicer_compile.llm.opsc import WEIGHT_PRECISIONS
from slicer_compile.llm.llama import LlamaSpec
from slicer_compile.storage import sha256_of

_PART_FILE = re.compile(r"^parts/[A-Za-z0-9_]+\.onnx$")
#: no byte count, time or rate in a manifest is beyond this (a petabyte; 30 years in ms)
_MAX_FIELD = 1e15
CUT_FIELDS = ("edge_ms_per_token", "server_ms_per_token", "hidden_bytes_per_token", "edge_kv_bytes_per_token",
              "server_kv_bytes_per_token", "edge_weight_bytes", "edge_memory_bytes_at_max_tokens")


@dataclass
class LlmArtifact:
    path: Path
    manifest: dict
    spec: LlamaSpec

    @property
    def id(self) -> str:
        return self.manifest["artifact_id"]

    @property
    def cuts(self) -> list[dict]:
        return self.manifest["cuts"]

    def part_path(self, name: str) -> Path:
        relative = self.manifest["parts"].get(name)
        if relative is None:
            raise ArtifactError(f"{self.path}: no part {name!r}")
        path = self.path / relative
        if path.is_symlink() or not path.is_file():
            raise ArtifactError(f"{path}: missing (or a link) in the artifact")
        if sha256_of(path) != self.manifest["digests"][name]:
            raise ArtifactError(f"{path} does not match its digest in the manifest: the artifact was changed")
        return path

    @property
    def edge_weights(self) -> str:
        return self.manifest["weights"]["edge"]

    def parts(self, side: str = "server") -> LlmParts:
        """The parts as ``side`` runs them: the edge's layers quantised where the artifact
        was compiled with int8/int4 edge weights, the server's at full precision."""
        name = edge_layer_name if side == "edge" and self.edge_weights != "fp32" else layer_name
        layers = tuple(self.part_path(name(i)).read_bytes() for i in range(self.spec.num_layers))
        return LlmParts(self.part_path(EMBED).read_bytes(), layers, self.part_path(HEAD).read_bytes())


def is_llm_manifest(manifest) -> bool:
    return isinstance(manifest, dict) and manifest.get("kind") == LLM_KIND


def is_llm_artifact_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a manifest of an LLM artifact (commands that take either
    kind dispatch on it; an unreadable one is not, and its loader says what is wrong)."""
    try:
        return is_llm_manifest(json.loads((Path(path) / MANIFEST).read_text()))
    except (OSError, ValueError, RecursionError):
        return False


def load_llm_artifact(path: str | Path) -> LlmArtifact:
    """Read and check an LLM artifact's manifest.

    Raises:
        ArtifactError: no manifest, another kind or schema version, a malformed field.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except OSError:
        raise ArtifactError(f"{path} is not an artifact directory (no readable {MANIFEST})") from None
    except (ValueError, RecursionError):
        raise ArtifactError(f"{manifest_path} is not valid JSON") from None
    if not is_llm_manifest(manifest):
        raise ArtifactError(f"{path} is not an LLM artifact (compiled by `slicer-compile llm`)")
    if manifest.get("schema_version") != LLM_SCHEMA_VERSION:
        raise ArtifactError(f"{manifest_path} has LLM schema version {manifest.get('schema_version')}; this build "
                            f"reads {LLM_SCHEMA_VERSION}")
    try:
        _check_top_level(manifest)
        spec = _spec(manifest["architecture"])
        weights = manifest["weights"]
        expected = {EMBED, HEAD, *(layer_name(i) for i in range(spec.num_layers))}
        if weights["edge"] != "fp32":
            expected |= {edge_layer_name(i) for i in range(spec.num_layers)}
        parts, digests = manifest["parts"], manifest["digests"]
        if not isinstance(parts, dict) or set(parts) != expected or not isinstance(digests, dict) \
                or set(digests) != expected:
            raise ArtifactError(f"parts and digests must name exactly embed, head and {layer_name(0)}.."
                                f"{layer_name(spec.num_layers - 1)} (the {spec.num_layers} layers of the "
                                f"architecture){' and their edge_ copies' if weights['edge'] != 'fp32' else ''}")
        for name, relative in parts.items():
            if not isinstance(relative, str) or not _PART_FILE.match(relative):
                raise ArtifactError(f"part {name!r}: {relative!r} is not a file under parts/")
            if not isinstance(digests[name], str) or not re.fullmatch(r"[0-9a-f]{64}", digests[name]):
                raise ArtifactError(f"part {name!r}: malformed digest")
        cuts = manifest["cuts"]
        if not isinstance(cuts, list) or [c.get("cut") if isinstance(c, dict) else None for c in cuts] != \
                list(range(spec.num_layers + 1)):
            raise ArtifactError(f"cuts must be the layer boundaries 0..{spec.num_layers} in order")
        for row in cuts:
            if row.get("edge_layers") != row["cut"]:
                raise ArtifactError(f"cut {row['cut']}: edge_layers must equal the cut")
            for key in CUT_FIELDS:
                value = row.get(key)
                whole = key.endswith("_bytes") or key.endswith("_bytes_per_token") or key.endswith("_max_tokens")
                if (not isinstance(value, int if whole else (int, float)) or isinstance(value, bool)
                        or not 0 <= value <= _MAX_FIELD):
                    raise ArtifactError(f"cut {row['cut']}: {key} must be {'an integer' if whole else 'a number'} "
                                        f"in 0..{_MAX_FIELD:g}, got {value!r}")
        full = manifest["edge_full_step_ms"]
        if not isinstance(full, (int, float)) or isinstance(full, bool) or not 0 <= full <= _MAX_FIELD:
            raise ArtifactError(f"edge_full_step_ms must be a number >= 0, got {full!r}")
        _check_calibration(manifest.get("calibration"), spec)
        _check_opsc(manifest.get("opsc"), spec)
        max_tokens = manifest["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 1 << 24:
            raise ArtifactError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    except KeyError as exc:
        raise ArtifactError(f"{manifest_path}: the manifest lacks {exc}") from None
    except ArtifactError as exc:
        raise ArtifactError(f"{manifest_path}: {exc}") from None
    return LlmArtifact(path, manifest, spec)


def _check_top_level(manifest: dict) -> None:
    """The fields every reader prints or compares, of the types they expect."""
    for key in ("artifact_id", "source", "tool_version", "created"):
        if not isinstance(manifest[key], str):
            raise ArtifactError(f"{key} must be a string")
    for key in ("device", "server_device"):
        device = manifest[key]
        if not isinstance(device, dict) or not all(isinstance(device.get(f), str)
                                                   for f in ("name", "description", "latency_source")):
            raise ArtifactError(f"{key} must be an object with name, description and latency_source")
    weights = manifest["weights"]
    if not isinstance(weights, dict) or weights.get("edge") not in WEIGHT_PRECISIONS or weights.get("server") != "fp32" \
            or not (weights.get("group_size") is None or (isinstance(weights["group_size"], int)
                                                          and not isinstance(weights["group_size"], bool))):
        raise ArtifactError(f"weights must be {{edge: one of {WEIGHT_PRECISIONS}, server: fp32, group_size}}")
    seconds = manifest.get("compile_seconds")
    if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)):
        raise ArtifactError("compile_seconds must be a number")


def _check_calibration(section, spec: LlamaSpec) -> None:
    if section is None or (isinstance(section, dict) and section.get("status") == "none"):
        return
    if not isinstance(section, dict) or section.get("status") != "measured" or not isinstance(section.get("cuts"), dict):
        raise ArtifactError("calibration must be {status: none} or a measured section with cuts")
    handover = section.get("handover", {})
    if not isinstance(handover, dict):
        raise ArtifactError("calibration: handover must be an object")
    for cut, rows in handover.items():
        _check_rows(cut, rows, spec, ("token_agreement", "perplexity", "kv_bits_per_token"))
    for cut, rows in section["cuts"].items():
        _check_rows(cut, rows, spec, ("token_agreement", "perplexity", "bits_per_token"),
                    optional=("frame_bits_per_token",))  # absent from artifacts calibrated before the stream form


def _check_rows(cut, rows, spec: LlamaSpec, fields: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """One cut's rows: setting -> {agreement in [0, 1], perplexity and bits: bounded numbers}
    (``optional`` fields: bounded numbers where present)."""
    if not (isinstance(cut, str) and cut.isdigit() and 1 <= int(cut) <= spec.num_layers) or not isinstance(rows, dict):
        raise ArtifactError(f"calibration: cut {cut!r} is not a layer boundary inside the model")
    for name, row in rows.items():
        values = [row.get(k) if isinstance(row, dict) else None for k in fields]
        values += [row[k] for k in optional if isinstance(row, dict) and k in row]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= _MAX_FIELD
                   for v in values) or values[0] > 1:
            raise ArtifactError(f"calibration: cut {cut}, {name!r}: {', '.join(fields)} must be numbers "
                                "(agreement in [0, 1])")


def _check_opsc(plan, spec: LlamaSpec) -> None:
    if plan is None:
        return
    try:
        ok = (isinstance(plan["memory_bytes"], (int, float)) and isinstance(plan["reason"], str)
              and plan["chosen"]["weights"] in WEIGHT_PRECISIONS and isinstance(plan["chosen"]["cut"], int)
              and 0 <= plan["chosen"]["cut"] <= spec.num_layers and isinstance(plan["candidates"], list)
              and all(r["weights"] in WEIGHT_PRECISIONS and isinstance(r["deepest_cut"], int)
                      and (r["token_agreement"] is None or isinstance(r["token_agreement"], (int, float)))
                      for r in plan["candidates"]))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise ArtifactError("opsc: malformed edge-weight choice")


def _spec(data) -> LlamaSpec:
    if not isinstance(data, dict):
        raise ArtifactError("architecture must be an object")
    fields = LlamaSpec.__dataclass_fields__
    if set(data) != set(fields):
        raise ArtifactError(f"architecture must have exactly {sorted(fields)}")
    for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                "intermediate_size"):
        value = data[key]
        if value is None and key == "intermediate_size":
            continue  # not known for an ONNX export whose weights do not show it
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1 << 20:
            raise ArtifactError(f"architecture: {key} must be a positive integer, got {value!r}")
    if data["num_heads"] % data["num_kv_heads"]:
        raise ArtifactError("architecture: num_heads must be a multiple of num_kv_heads")
    for key in ("rope_theta", "rms_norm_eps"):
        value = data[key]
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0):
            raise ArtifactError(f"architecture: {key} must be a positive number or null (unknown)")
    return LlamaSpec(**data)
