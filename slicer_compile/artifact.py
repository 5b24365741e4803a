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
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from slicer_compile.codec.centring import Centre
from slicer_compile.codec.config import CONFIG_BY_NAME, SlicerConfig
from slicer_compile.errors import ArtifactError, ConfigError
from slicer_compile.storage import sha256_of, write_text_atomically

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FULL_MODEL = "model.onnx"
ARTIFACT_ID_KEY = "slicer.artifact_id"
SPLIT_ID_KEY = "slicer.split_id"


#: Split ids are s + four digits: safe as folder names, never a path.
SPLIT_ID = re.compile(r"^s\d{4}$")
#: A part's file name inside splits/<id>/: no separators, no leading dot.
PART_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Crossing kinds: through the codec, or raw beside it.
CROSSING_KINDS = ("activation", "side")


def sparsity_key(sparsity: float) -> float:
    """The key of a sparsity in per-sparsity tables: its float32 value (what the codec
    uses), so that 0.9 from a grid and 0.8999999761581421 from a config are one key."""
    return float(np.float32(sparsity))


def _key_text(sparsity: float) -> str:
    return f"{sparsity:g}"


@dataclass(frozen=True)
class CrossingTensor:
    """A tensor the edge sends to the server at a cut."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "activation" (through the codec) or "side" (raw)
    #: an activation's padding mask: the crossing side tensor [B, S] whose zeros mark
    #: rows to leave out of the coding (codec.padding); None for none
    mask: str | None = None
    #: an activation's per-channel offsets, coded as a residual (codec.centring); None: coded plain
    centre: Centre | None = None

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.num_elements * np.dtype(self.dtype).itemsize

    def as_dict(self) -> dict:
        row = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "kind": self.kind,
               "nbytes": self.nbytes}
        if self.mask is not None:
            row["mask"] = self.mask
        if self.centre is not None:
            row["centre"] = self.centre.as_dict()
        return row

    @staticmethod
    def from_dict(data) -> "CrossingTensor":
        if not isinstance(data, dict):
            raise ArtifactError(f"a crossing tensor must be an object, got {type(data).__name__}")
        name, shape, dtype, kind = (data.get(k) for k in ("name", "shape", "dtype", "kind"))
        if not isinstance(name, str) or not name:
            raise ArtifactError(f"a crossing tensor needs a name, got {name!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                  for d in shape):
            raise ArtifactError(f"crossing tensor {name!r}: shape must be a list of positive integers, got {shape!r}")
        try:
            if not isinstance(dtype, str):  # np.dtype(None) is float64: only a name will do
                raise TypeError
            np.dtype(dtype)
        except TypeError:
            raise ArtifactError(f"crossing tensor {name!r}: unknown dtype {dtype!r}") from None
        if kind not in CROSSING_KINDS:
            raise ArtifactError(f"crossing tensor {name!r}: kind must be one of {CROSSING_KINDS}, got {kind!r}")
        mask = data.get("mask")
        if mask is not None and (not isinstance(mask, str) or kind != "activation"):
            raise ArtifactError(f"crossing tensor {name!r}: mask must name a side tensor of an activation")
        centre = data.get("centre")
        if centre is not None:
            if kind != "activation":
                raise ArtifactError(f"crossing tensor {name!r}: only an activation is centred")
            centre = Centre.from_dict(centre, tuple(shape), f"crossing tensor {name!r}")
        return CrossingTensor(name, tuple(shape), str(dtype), kind, mask, centre)


@dataclass(frozen=True)
class SplitInfo:
    """One row of the split table. Per-sparsity tables are keyed by :func:`sparsity_key`."""

    id: str
    position: int
    crossing: tuple[CrossingTensor, ...]
    edge_latency_s: float
    server_latency_s: float
    edge_memory_bytes: int
    edge_flops: float
    server_flops: float
    if_shape: tuple[int, ...]  # of the (first) activation
    if_bytes: int  # raw bytes of every crossing tensor
    payload_bound_bytes: dict[float, int]  # sparsity -> the codec's bound for the activations
    payload_bytes_limit: int  # the encoder node's fixed output size, summed over activations
    fidelity: dict[float, float] | None  # sparsity -> fidelity, None without calibration
    files: dict | None  # {"edge": "splits/<id>/edge.onnx", "server": ...} once materialised
    digests: dict | None = None  # SHA-256 (hex) of each file, by the same keys

    @property
    def activations(self) -> list[CrossingTensor]:
        return [t for t in self.crossing if t.kind == "activation"]

    @property
    def sides(self) -> list[CrossingTensor]:
        return [t for t in self.crossing if t.kind == "side"]

    @property
    def side_bytes(self) -> int:
        """Bytes of the side tensors, which travel raw beside the payload."""
        return sum(t.nbytes for t in self.sides)

    @property
    def edge_share(self) -> float:
        """Share of the model's FLOPs that run on the edge."""
        total = self.edge_flops + self.server_flops
        return self.edge_flops / total if total else 0.0

    def fidelity_at(self, sparsity: float) -> float | None:
        return None if not self.fidelity else self.fidelity.get(sparsity_key(sparsity))

    def payload_bound_at(self, sparsity: float) -> int | None:
        return self.payload_bound_bytes.get(sparsity_key(sparsity))

    def as_dict(self) -> dict:
        """The manifest's form (JSON: sparsities as text keys, crossing tensors as objects)."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["crossing"] = [t.as_dict() for t in self.crossing]
        row["if_shape"] = list(self.if_shape)
        row["payload_bound_bytes"] = {_key_text(k): v for k, v in self.payload_bound_bytes.items()}
        row["fidelity"] = None if self.fidelity is None else {_key_text(k): v for k, v in self.fidelity.items()}
        return row

    @staticmethod
    def from_dict(data) -> "SplitInfo":
        """A row of the manifest, checked (ArtifactError on anything malformed)."""
        if not isinstance(data, dict):
            raise ArtifactError(f"a split must be an object, got {type(data).__name__}")
        missing = sorted({f.name for f in fields(SplitInfo)} - {"digests"} - set(data))
        if missing:
            raise ArtifactError(f"split {data.get('id')!r} lacks {', '.join(missing)}")
        split_id = data["id"]
        if not isinstance(split_id, str) or not SPLIT_ID.match(split_id):
            raise ArtifactError(f"split id {split_id!r} is not of the form s0000")
        try:
            crossing = data["crossing"]
            if not isinstance(crossing, list):
                raise ArtifactError("crossing must be a list")
            files = _part_files(split_id, data["files"])
            digests = data.get("digests")
            if digests is not None and not (isinstance(digests, dict) and files is not None and all(
                    k in files and isinstance(v, str) and SHA256.match(v) for k, v in digests.items())):
                raise ArtifactError("digests must map the split's file keys to SHA-256 hex digests")
            tensors = tuple(CrossingTensor.from_dict(t) for t in crossing)
            sides = {t.name: t for t in tensors if t.kind == "side"}
            for t in tensors:
                if t.mask is not None and (t.mask not in sides or sides[t.mask].shape != t.shape[:2]):
                    raise ArtifactError(f"activation {t.name}: mask {t.mask!r} is not a side tensor of its first "
                                        "two axes")
            return SplitInfo(
                id=split_id, position=_int(data["position"]),
                crossing=tensors,
                edge_latency_s=_number(data["edge_latency_s"]), server_latency_s=_number(data["server_latency_s"]),
                edge_memory_bytes=_int(data["edge_memory_bytes"]), edge_flops=_number(data["edge_flops"]),
                server_flops=_number(data["server_flops"]), if_shape=tuple(_int(d) for d in data["if_shape"]),
                if_bytes=_int(data["if_bytes"]), payload_bound_bytes=_by_sparsity(data["payload_bound_bytes"], _int),
                payload_bytes_limit=_int(data["payload_bytes_limit"]),
                fidelity=None if data["fidelity"] is None else _by_sparsity(data["fidelity"], _number),
                files=files, digests=None if digests is None else dict(digests))
        except ArtifactError as exc:
            raise ArtifactError(f"split {split_id}: {exc}") from None
        except TypeError as exc:
            raise ArtifactError(f"split {split_id}: malformed ({exc})") from None


def _part_files(split_id: str, files) -> dict | None:
    """A split's file table, each path exactly ``splits/<id>/<name>``: nothing a
    manifest names can lead outside the artifact (no "..", no absolute path)."""
    if files is None:
        return None
    if not isinstance(files, dict):
        raise ArtifactError("files must map part names to relative paths")
    for key, relative in files.items():
        parts = relative.split("/") if isinstance(relative, str) else []
        if not (isinstance(key, str) and len(parts) == 3 and parts[:2] == ["splits", split_id]
                and PART_FILE.match(parts[2])):
            raise ArtifactError(f"file {key!r} = {relative!r} is not a file of splits/{split_id}/")
    return dict(files)


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArtifactError(f"expected an integer, got {value!r}")
    return value


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArtifactError(f"expected a finite number, got {value!r}")
    return float(value)


def _by_sparsity(table, convert) -> dict[float, object]:
    if not isinstance(table, dict):
        raise ArtifactError(f"expected a table by sparsity, got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        try:
            sparsity = float(key)
        except ValueError:
            raise ArtifactError(f"sparsity key {key!r} is not a number") from None
        out[sparsity_key(sparsity)] = convert(value)
    return out


@dataclass(frozen=True)
class CodecSection:
    """The manifest's codec: the default knobs, what the encoder nodes accept, the grid."""

    name: str
    defaults: SlicerConfig
    min_sparsity: float
    max_blocks: int
    max_q_bits: int
    sparsity_grid: tuple[float, ...]

    @property
    def codec_id(self) -> int:
        """The wire codec id of the codec the artifact's encoder nodes write."""
        return CONFIG_BY_NAME[self.name].codec_id

    @staticmethod
    def from_dict(data) -> "CodecSection":
        try:
            limits = data["limits"]
            if data["name"] not in CONFIG_BY_NAME:
                raise ArtifactError(f"unknown codec {data['name']!r} (known: {', '.join(sorted(CONFIG_BY_NAME))})")
            return CodecSection(data["name"], SlicerConfig.from_dict(data["defaults"]),
                                _number(limits["min_sparsity"]), _int(limits["max_blocks"]),
                                _int(limits["max_q_bits"]), tuple(_number(s) for s in data["sparsity_grid"]))
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"malformed codec section ({exc})") from None
        except ConfigError as exc:
            raise ArtifactError(f"codec defaults: {exc}") from None


@dataclass(frozen=True)
class CalibrationSection:
    """What calibration measured: the metric and sample count, or why nothing was."""

    measured: bool
    metric: str | None
    samples: int
    reason: str = ""

    @staticmethod
    def from_dict(data) -> "CalibrationSection":
        if not isinstance(data, dict) or data.get("status") not in ("measured", "none"):
            raise ArtifactError("malformed calibration section")
        if data["status"] == "none":
            return CalibrationSection(False, None, 0, str(data.get("reason", "")))
        try:
            return CalibrationSection(True, str(data["metric"]), _int(data["samples"]))
        except KeyError as exc:
            raise ArtifactError(f"calibration section lacks {exc}") from None


@dataclass
class Artifact:
    """A loaded artifact directory: the manifest as read, and its typed sections."""

    path: Path
    manifest: dict
    splits: list[SplitInfo] = field(default_factory=list)
    _verified: dict = field(default_factory=dict, repr=False, compare=False)  # (path, size, mtime) -> SHA-256

    @property
    def id(self) -> str:
        return self.manifest["artifact_id"]

    @property
    def pareto(self) -> list[str]:
        return list(self.manifest["pareto"])

    @property
    def codec(self) -> CodecSection:
        return CodecSection.from_dict(self.manifest["codec"])

    @property
    def calibration(self) -> CalibrationSection:
        return CalibrationSection.from_dict(self.manifest["calibration"])

    @property
    def engine(self) -> dict | None:
        """What the engine backend recorded of its build (None: ONNX parts only)."""
        return self.manifest.get("engine")

    def split(self, split_id: str) -> SplitInfo:
        for s in self.splits:
            if s.id == split_id:
                return s
        known = ", ".join(s.id for s in self.splits[:8])
        raise ArtifactError(f"no split {split_id!r} in {self.path} (splits: {known}{', …' if len(self.splits) > 8 else ''})")

    def update_split(self, split_id: str, **changes) -> SplitInfo:
        """Replace fields of one split, in the table and the manifest (not yet written:
        :func:`write_manifest`)."""
        updated = replace(self.split(split_id), **changes)
        self.splits = [updated if s.id == split_id else s for s in self.splits]
        self.manifest["splits"] = [s.as_dict() for s in self.splits]
        return updated

    def part_path(self, split_id: str, part: str) -> Path:
        """Path of a materialised part ("edge", "server", or a backend's engine key),
        inside the artifact and matching the digest the manifest records.

        Raises:
            ArtifactError: not materialised, missing, reached through a symbolic link,
                or changed since it was written.
        """
        info = self.split(split_id)
        if not info.files or part not in info.files:
            raise ArtifactError(f"split {split_id} is not materialised: run slicer-compile materialize {self.path} --split {split_id}")
        path = self.confined(info.files[part])
        if not path.is_file():
            raise ArtifactError(f"split {split_id}'s {part} part is missing: {path} (run slicer-compile materialize "
                                f"{self.path} --split {split_id}, or recompile)")
        expected = (info.digests or {}).get(part)
        if expected is not None and self._digest(path) != expected:
            raise ArtifactError(f"split {split_id}'s {part} part ({path}) is not the file slicer-compile wrote: its "
                                "SHA-256 differs from the manifest's (recompile, or materialize again)")
        return path

    def confined(self, relative: str) -> Path:
        """``relative`` under the artifact, refused where a symbolic link (of the file or
        of a folder on the way) would lead elsewhere."""
        root = self.path.resolve()
        path = root / relative
        if path.resolve() != path or not path.resolve().is_relative_to(root):
            raise ArtifactError(f"{self.path / relative} is reached through a symbolic link; an artifact's files "
                                "must lie inside it")
        return path

    def load_part_model(self, split_id: str, part: str, load_external_data: bool = True):
        """The ONNX graph of a part; ONNX's own refusals (an external-data path that leaves
        the folder, a truncated file) as ArtifactError."""
        return load_model_file(self.part_path(split_id, part), load_external_data)

    def _digest(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._verified:
            self._verified[key] = sha256_of(path)
        return self._verified[key]

    def example_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """One sample (batch of one) for the model's inputs: what benchmarks and checks feed."""
        from slicer_compile.frontend.onnx_model import example_feeds

        return example_feeds([(i["name"], [1] + list(i["shape"][1:]), i["dtype"]) for i in self.manifest["inputs"]],
                             seed)


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
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise ArtifactError(f"{manifest_path} is not valid JSON: {exc or 'nested too deeply'}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {manifest_path}: {exc.strerror or exc}") from None
    if isinstance(manifest, dict) and manifest.get("kind") == "llm":
        raise ArtifactError(f"{path} is an LLM artifact (slicer-compile llm): `inspect` reads it; this command "
                            "takes a split artifact")
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{manifest_path} has schema version {version}; this build reads {SCHEMA_VERSION}")
    try:
        rows = manifest["splits"]
        if not isinstance(rows, list):
            raise ArtifactError("the split table must be a list")
        splits = [SplitInfo.from_dict(s) for s in rows]
        _check_top_level(manifest, {s.id for s in splits})
        artifact = Artifact(path, manifest, splits)
        artifact.codec, artifact.calibration  # the typed sections parse, or the load fails here
    except KeyError as exc:
        raise ArtifactError(f"{manifest_path}: the manifest lacks {exc}") from None
    except ArtifactError as exc:
        raise ArtifactError(f"{manifest_path}: {exc}") from None
    return artifact


def load_model_file(path: Path, load_external_data: bool = True):
    """``onnx.load`` of an artifact's file, its failures as ArtifactError (ONNX refuses an
    external-data location outside the model's folder; protobuf, a file that is not a model)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except (onnx.checker.ValidationError, DecodeError, ValueError, OSError) as exc:
        raise ArtifactError(f"cannot load {path} as an ONNX model: {exc}") from None


def _check_top_level(manifest: dict, split_ids: set[str]) -> None:
    """The manifest's other sections, as the layers above read them."""
    if not isinstance(manifest["artifact_id"], str) or not re.fullmatch(r"[0-9a-f]{16}", manifest["artifact_id"]):
        raise ArtifactError(f"artifact_id {manifest['artifact_id']!r} is not 16 hex digits")
    for key in ("inputs", "outputs"):
        entries = manifest[key]
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("dtype"), str)
                and isinstance(e.get("shape"), list) and all(isinstance(d, (int, str)) for d in e["shape"])
                for e in entries):
            raise ArtifactError(f"{key} must be a list of {{name, shape, dtype}}")
    pareto = manifest["pareto"]
    if not isinstance(pareto, list) or not all(isinstance(p, str) and p in split_ids for p in pareto):
        raise ArtifactError("pareto must list split ids of the table")
    source = manifest["source"]
    if not (isinstance(source, dict) and isinstance(source.get("path"), str)):
        raise ArtifactError("source must be an object with the model's path")
    for key in ("device", "server_device"):
        device = manifest.get(key)
        if not (isinstance(device, dict) and isinstance(device.get("name"), str)):
            raise ArtifactError(f"{key} must be an object with a name")
        memory = device.get("memory_bytes")
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory <= 0):
            raise ArtifactError(f"{key}.memory_bytes must be a positive number")
    notes = manifest.get("shape_notes", [])
    if not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
        raise ArtifactError("shape_notes must be a list of text")
    if manifest.get("engine") is not None and not isinstance(manifest["engine"], dict):
        raise ArtifactError("engine must be an object or null")


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
