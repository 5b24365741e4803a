"""Writing what the tool produces without ever losing what it did not.

Two promises, kept here for every command:

* **Atomic writes.** A file (a manifest, a part, a payload) is written to a
  temporary name beside its target and renamed onto it, so a crash leaves
  either the old file or the new one, never half of one.
* **Replace only what we wrote.** A directory output (an artifact, a Triton
  repository) is built beside its destination and swapped in when complete:
  the old directory is renamed aside, the new one moved in, and only then the
  old one deleted. ``--force`` replaces a directory only when it is empty or
  carries our mark (an artifact's manifest, a repository's marker file); the
  current directory, its parents, the home folder, the filesystem root, any
  folder that holds an input of the command and the source checkout are never
  replaced.

Staging and set-aside directories are named ``.<name>.staging-<pid>-<random>``
and ``.<name>.old-<pid>-<random>``; one left by a process that no longer runs
(a killed compile) is cleaned up the next time the same destination is
written, and a set-aside old directory whose swap never finished is moved back.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterable

from slicer_compile.errors import ArtifactError

#: What ``--force`` may replace: a predicate on an existing, non-empty directory.
Ownership = Callable[[Path], bool]

_STAGING = "staging"
_OLD = "old"


# --- files ---------------------------------------------------------------------------


class atomic_path:
    """A temporary path beside ``target``, renamed onto it only on success.

    ::

        with atomic_path(out / "manifest.json") as tmp:
            tmp.write_text(text)
    """

    def __init__(self, target: str | Path):
        self.target = Path(target)
        self.tmp = self.target.with_name(f".{self.target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")

    def __enter__(self) -> Path:
        if not self.target.parent.is_dir():
            raise ArtifactError(f"output directory does not exist: {self.target.parent}")
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def write_bytes_atomically(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomically(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


# --- directories ---------------------------------------------------------------------


def protected_directories(inputs: Iterable[str | Path] = ()) -> list[Path]:
    """Directories no command may replace, resolved: the current directory and its
    parents, the home folder, the filesystem root, the source checkout, and every
    directory that holds (or is) one of ``inputs``."""
    cwd = Path.cwd().resolve()
    protected = {cwd, *cwd.parents, Path.home().resolve(), Path(cwd.anchor)}
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "setup.py").is_file() or (checkout / ".git").exists():
        protected.add(checkout)
    for item in inputs:
        path = Path(item).resolve()
        protected.update({path, *path.parents})
    return sorted(protected)


class StagedDirectory:
    """Build a directory beside its destination; swap it in only when complete.

    Args:
        destination: the directory to create or replace.
        overwrite: replace an existing directory (``--force``), if ``owned`` says we wrote it.
        owned: True for a directory this tool wrote (checked only on a non-empty one).
        what: the kind of output, for messages ("artifact", "Triton repository").
        inputs: the command's input paths: no directory holding one is ever replaced.
    """

    def __init__(self, destination: str | Path, overwrite: bool = False, owned: Ownership | None = None,
                 what: str = "output directory", inputs: Iterable[str | Path] = ()):
        self.destination = Path(destination)
        self.overwrite = overwrite
        self.owned = owned or (lambda path: False)
        self.what = what
        self.inputs = list(inputs)
        self.staging: Path | None = None

    def __enter__(self) -> Path:
        self.check()
        recover_interrupted(self.destination)
        # os.mkdir applies the umask (mkdtemp would make it 0700: unreadable to a
        # server running as another user).
        self.staging = _sibling(self.destination, _STAGING)
        try:
            os.mkdir(self.staging)
        except OSError as exc:
            raise ArtifactError(f"cannot write to {self.destination.parent}: {exc.strerror or exc}") from None
        return self.staging

    def check(self) -> None:
        """Refuse the destination now, before any work, where ``__enter__`` would: a
        protected folder, a missing parent, a file, a non-empty folder without
        ``overwrite`` or not ours, no write permission."""
        dest, parent = self.destination, self.destination.parent
        resolved = dest.resolve()
        if resolved in protected_directories(self.inputs):
            raise ArtifactError(f"refusing to write the {self.what} to {dest}: it is the current directory, a parent "
                                "of it, the home folder, the source checkout or a folder holding an input; "
                                "name a new directory with -o")
        if not parent.is_dir():
            raise ArtifactError(f"output directory's parent does not exist: {parent}")
        if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
            raise ArtifactError(f"{dest} exists and is not a directory; name a new directory with -o")
        if dest.exists() and any(dest.iterdir()):
            if not self.overwrite:
                raise ArtifactError(f"{dest} exists and is not empty (use --force to replace it)")
            if not self.owned(dest):
                raise ArtifactError(f"{dest} is not a slicer-compile {self.what}: --force replaces only a directory "
                                    "that slicer-compile wrote (or an empty one); name a new directory with -o")
        if not os.access(parent, os.W_OK):
            raise ArtifactError(f"cannot write to {parent}: permission denied")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        swap_in(self.staging, self.destination)


def swap_in(new: Path, destination: Path) -> None:
    """Move ``new`` onto ``destination``: old aside, new in, old deleted. A crash at
    any point leaves the old directory or the new one in place (or aside, where
    :func:`recover_interrupted` moves it back)."""
    old = None
    if destination.exists():
        old = _sibling(destination, _OLD)
        os.replace(destination, old)
    try:
        os.replace(new, destination)
    except OSError:
        if old is not None:
            os.replace(old, destination)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_interrupted(destination: Path) -> None:
    """Clean what a killed run left beside ``destination``: its staging copies are
    deleted; an old directory set aside by a swap that never finished is moved
    back when the destination is missing, else deleted."""
    parent = destination.parent
    if not parent.is_dir():
        return
    for kind in (_OLD, _STAGING):
        for leftover in parent.glob(f".{destination.name}.{kind}-*"):
            pid = _owner_pid(leftover.name, destination.name, kind)
            if pid is None or _alive(pid) or not leftover.is_dir():
                continue
            if kind == _OLD and not destination.exists():
                os.replace(leftover, destination)
            else:
                shutil.rmtree(leftover, ignore_errors=True)


def _sibling(destination: Path, kind: str) -> Path:
    return destination.parent / f".{destination.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _owner_pid(name: str, base: str, kind: str) -> int | None:
    rest = name[len(f".{base}.{kind}-"):]
    pid, _, token = rest.partition("-")
    return int(pid) if pid.isdigit() and token else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: protobuf's hard limit for one message; larger ONNX models keep their weights in a side file.
_PROTOBUF_LIMIT = 2**31 - 1


def save_onnx_atomically(model, target: str | Path) -> None:
    """``onnx.save`` through a temporary name. A model above protobuf's 2 GB limit
    keeps its weights in ``<name>.data`` beside it (ONNX external data)."""
    import onnx

    target = Path(target)
    if model.ByteSize() < _PROTOBUF_LIMIT - (64 << 20):
        with atomic_path(target) as tmp:
            onnx.save(model, str(tmp))
        return
    scratch = _sibling(target, _STAGING)
    os.mkdir(scratch)
    try:
        data_name = f"{target.name}.data"
        onnx.save(model, str(scratch / target.name), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data_name)
        os.replace(scratch / data_name, target.parent / data_name)
        os.replace(scratch / target.name, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_png(figure, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure written as a PNG through a temporary name (a report is never
    left with half a plot), its folder made if need be; the figure is closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(figure)
    return path
