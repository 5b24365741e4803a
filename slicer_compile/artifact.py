"""The artifact directory and its manifest (one schema, versioned).

::

    out/
      manifest.json      schema_version, tool version, source model sha256, device,
                         backend, codec defaults, splits[], pareto ids
      model.onnx         the normalised full model (weights stored once)
      splits/<id>/       edge.onnx, server.onnx (edge.plan, server.plan with TensorRT)
      report.md, plots/  the split table and plots a person reads first

Edge and server parts carry the artifact id in their metadata; the server
refuses a payload from another artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from slicer_compile.errors import ArtifactError
from slicer_compile.storage import write_text_atomically

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FULL_MODEL = "model.onnx"
ARTIFACT_ID_KEY = "slicer.artifact_id"
SPLIT_ID_KEY = "slicer.split_id"


@dataclass(frozen=True)
class SplitInfo:
    """One row of the split table."""

    id: str
    position: int
    crossing: tuple[dict, ...]  # name, shape, dtype, kind, nbytes
    edge_latency_s: float
    server_latency_s: float
    edge_memory_bytes: int
    edge_flops: float
    server_flops: float
    if_shape: tuple[int, ...]  # of the (first) activation
    if_bytes: int  # raw bytes of every crossing tensor
    payload_bound_bytes: dict  # sparsity (str) -> bytes: the codec's bound for the activations
    payload_bytes_limit: int  # the encoder node's fixed output size, summed over activations
    fidelity: dict | None  # sparsity (str) -> fidelity, None without calibration
    files: dict | None  # {"edge": "splits/<id>/edge.onnx", "server": ...} once materialised

    @property
    def activations(self) -> list[dict]:
        return [t for t in self.crossing if t["kind"] == "activation"]

    @property
    def edge_share(self) -> float:
        """Share of the model's FLOPs that run on the edge."""
        total = self.edge_flops + self.server_flops
        return self.edge_flops / total if total else 0.0


@dataclass
class Artifact:
    """A loaded artifact directory."""

    path: Path
    manifest: dict
    splits: list[SplitInfo] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.manifest["artifact_id"]

    @property
    def pareto(self) -> list[str]:
        return list(self.manifest["pareto"])

    def split(self, split_id: str) -> SplitInfo:
        for s in self.splits:
            if s.id == split_id:
                return s
        known = ", ".join(s.id for s in self.splits[:8])
        raise ArtifactError(f"no split {split_id!r} in {self.path} (splits: {known}{', …' if len(self.splits) > 8 else ''})")

    def part_path(self, split_id: str, part: str) -> Path:
        """Path of a materialised part ("edge" or "server")."""
        info = self.split(split_id)
        if not info.files:
            raise ArtifactError(f"split {split_id} is not materialised: run slicer-compile materialize {self.path} --split {split_id}")
        path = self.path / info.files[part]
        if not path.is_file():
            raise ArtifactError(f"split {split_id}'s {part} part is missing: {path} (run slicer-compile materialize "
                                f"{self.path} --split {split_id}, or recompile)")
        return path


def load_artifact(path: str | Path) -> Artifact:
    """Read an artifact directory's manifest.

    Raises:
        ArtifactError: missing directory or manifest, another schema version, bad JSON.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path} is not an artifact directory (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON: {exc}") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{manifest_path} has schema version {version}; this build reads {SCHEMA_VERSION}")
    try:
        splits = [SplitInfo(**{**s, "crossing": tuple(s["crossing"]), "if_shape": tuple(s["if_shape"])})
                  for s in manifest["splits"]]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path}: malformed split table ({exc})") from None
    return Artifact(path, manifest, splits)


def write_manifest(path: Path, manifest: dict) -> None:
    """Write manifest.json atomically: a crash leaves the old manifest or the new one."""
    write_text_atomically(Path(path) / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def is_artifact_dir(path: Path) -> bool:
    """True for a directory slicer-compile wrote as an artifact (what ``--force`` may replace)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "artifact_id" in manifest and "schema_version" in manifest
