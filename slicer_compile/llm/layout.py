"""Where an LLM artifact keeps what: its manifest's kind and version, the part files."""

from __future__ import annotations

from slicer_compile.artifact import MANIFEST  # noqa: F401 (the same file name as a split artifact's)

LLM_KIND = "llm"
LLM_SCHEMA_VERSION = 1
PARTS = "parts"


def layer_name(i: int) -> str:
    """The part name of decoder layer ``i`` (0-based)."""
    return f"layer_{i:03d}"


def edge_layer_name(i: int) -> str:
    """The part name of the edge's copy of layer ``i`` with quantised weights (OPSC)."""
    return f"edge_layer_{i:03d}"
