"""Every module imports on a bare CPU box: heavy dependencies are imported lazily."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import slicer_compile

HEAVY = ("torch", "tensorrt", "cuda", "onnxruntime_extensions", "tritonclient")


def all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(slicer_compile.__path__, "slicer_compile.")]


def test_every_module_imports():
    for name in all_modules():
        importlib.import_module(name)


def test_no_heavy_import_at_module_level():
    code = (
        "import sys, importlib\n"
        f"for name in {all_modules()!r}: importlib.import_module(name)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at module level: {out}"


def test_lower_layers_never_import_the_cli():
    for name in all_modules():
        if name == "slicer_compile.cli" or name.startswith("slicer_compile.cli."):
            continue
        source = importlib.import_module(name).__file__
        with open(source) as f:
            assert "slicer_compile.cli" not in f.read(), name
