"""Where the native sources are, and where their builds go.

The C++/CUDA sources (``cuda/``, ``plugins/``) live in the source tree, not in the
installed package. An editable install (``pip install -e .``) finds them beside the
package; after ``pip install .`` give the tree with ``--source`` or
``$SLICER_SOURCE``. Builds go to ``<source tree>/build/``; with no source tree
known, to ``$XDG_CACHE_HOME/slicer-compile/build`` (``~/.cache``), the one place that
``build-kernels`` writes and ``backends`` and the TensorRT path look.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Names a source tree of slicer-compile explicitly.
SOURCE_ENV = "SLICER_SOURCE"


def source_root(explicit: str | Path | None = None) -> Path | None:
    """The source tree holding ``cuda/`` and ``plugins/``: ``explicit``, else
    $SLICER_SOURCE, else the tree this package sits in (an editable install), else None."""
    for candidate in (explicit, os.environ.get(SOURCE_ENV), Path(__file__).resolve().parents[2]):
        if candidate and (Path(candidate) / "cuda" / "CMakeLists.txt").is_file():
            return Path(candidate).resolve()
    return None


def build_root(source: str | Path | None = None) -> Path:
    """Where native builds go: the source tree's ``build/``, else the user's cache."""
    root = source_root(source)
    if root is not None:
        return root / "build"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "slicer-compile" / "build"
