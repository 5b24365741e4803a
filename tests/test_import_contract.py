"""DESIGN.md's dependency direction, held by reading every import of the package
(those inside functions too): lower layers never import higher ones, backends never
import each other, nothing imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "slicer_compile"

#: What each part of the package may import from the package (besides itself).
#: Neutral helpers — errors, storage, native — import nothing above them.
NEUTRAL = {"slicer_compile", "slicer_compile.errors", "slicer_compile.storage", "slicer_compile.native"}
ALLOWED = {
    # The top package: its version, and the two entry points it re-exports lazily.
    "slicer_compile": {"slicer_compile.compiler", "slicer_compile.artifact"},
    "slicer_compile.backends": set(),
    "slicer_compile.errors": set(),
    "slicer_compile.storage": {"slicer_compile.errors"},
    "slicer_compile.native": {"slicer_compile.errors"},
    "slicer_compile.codec": NEUTRAL,
    "slicer_compile.frontend": NEUTRAL,
    "slicer_compile.graph": NEUTRAL | {"slicer_compile.codec", "slicer_compile.frontend", "slicer_compile.artifact"},
    "slicer_compile.select": NEUTRAL | {"slicer_compile.codec", "slicer_compile.artifact"},
    "slicer_compile.backends.base": NEUTRAL,
    "slicer_compile.backends.registry": NEUTRAL | {"slicer_compile.backends.base"},
    # A backend hosts the op contract (codec.ops) and runs on the neutral helpers; it never
    # imports another backend, graph surgery or anything above.
    "slicer_compile.backends.onnxrt": NEUTRAL | {"slicer_compile.backends.base", "slicer_compile.codec"},
    "slicer_compile.backends.tensorrt": NEUTRAL | {"slicer_compile.backends.base", "slicer_compile.codec.ops"},
    "slicer_compile.profile": NEUTRAL | {"slicer_compile.frontend", "slicer_compile.backends"},
    # The artifact's records are read by every layer above the codec; it reads only the codec's
    # records (its config, a tensor's centring offsets) and the front end's example feeds.
    "slicer_compile.artifact": NEUTRAL | {"slicer_compile.codec.config", "slicer_compile.codec.centring",
                                          "slicer_compile.frontend.onnx_model"},
    "slicer_compile.calibrate": NEUTRAL | {"slicer_compile.artifact", "slicer_compile.codec", "slicer_compile.frontend", "slicer_compile.graph",
                                           "slicer_compile.backends.onnxrt"},
    "slicer_compile.report": NEUTRAL | {"slicer_compile.artifact", "slicer_compile.select"},
    # The runtime serves both kinds of artifact: a split's parts, and an LLM's (its parts,
    # stacks and calibration tables, from slicer_compile.llm).
    "slicer_compile.runtime": NEUTRAL | {"slicer_compile.artifact", "slicer_compile.backends.base",
                                         "slicer_compile.backends.registry", "slicer_compile.codec",
                                         "slicer_compile.frontend", "slicer_compile.graph", "slicer_compile.select",
                                         "slicer_compile.llm"},
    # The LLM compiler and its runtime pieces: beside the split compiler, on the same layers
    # below (the artifact's file names, the codec, ONNX Runtime, the device models, the
    # autoregressive selector; the front end and the partitioner to read an ONNX export);
    # the split compiler does not import it, the runtime serves it, and it never imports
    # the runtime.
    "slicer_compile.llm": NEUTRAL | {"slicer_compile.artifact", "slicer_compile.codec", "slicer_compile.backends.onnxrt",
                                     "slicer_compile.profile.devices", "slicer_compile.select.autoregressive",
                                     "slicer_compile.frontend", "slicer_compile.graph.partition"},
    "slicer_compile.compiler": NEUTRAL | {"slicer_compile.artifact", "slicer_compile.backends.registry",
                                          "slicer_compile.calibrate", "slicer_compile.codec", "slicer_compile.frontend",
                                          "slicer_compile.graph", "slicer_compile.profile", "slicer_compile.report"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # "from pkg import module"
    return {n for n in names if n == "slicer_compile" or n.startswith("slicer_compile.")}


def rule_for(module: str) -> tuple[str, set[str]] | None:
    matches = [key for key in ALLOWED if module == key or (key != "slicer_compile" and module.startswith(key + "."))]
    return (max(matches, key=len), ALLOWED[max(matches, key=len)]) if matches else None


def within(name: str, prefixes: set[str]) -> bool:
    """``name`` is one of ``prefixes`` or inside one; the top package itself (for its
    ``__version__``) covers only itself."""
    return any(name == p or (p != "slicer_compile" and name.startswith(p + ".")) for p in prefixes)


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts[:1])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_dependency_direction(path):
    module = module_name(path)
    rule = rule_for(module)
    assert rule is not None, f"{module} has no place in the dependency rules: add it to ALLOWED"
    home, allowed = rule
    bad = []
    for name in imports_of(path):
        if name.startswith("slicer_compile.cli"):
            bad.append(name)
        elif not within(name, allowed | {home}) and not _is_attribute_import_of_allowed(name, allowed | {home}):
            bad.append(name)
    assert not bad, f"{module} imports {sorted(bad)}; it may import only {sorted(allowed)}"


def _is_attribute_import_of_allowed(name: str, allowed: set[str]) -> bool:
    """``from slicer_compile.codec import encode`` names ``slicer_compile.codec.encode``: an
    attribute of an allowed module, not a module of its own."""
    parent = name.rsplit(".", 1)[0]
    return within(parent, allowed) and not (PACKAGE.parent / (name.replace(".", "/") + ".py")).exists() \
        and not (PACKAGE.parent / name.replace(".", "/")).is_dir()


def test_the_contract_can_fail():
    """The checker sees a lazy import inside a function (a backend importing another)."""
    source = "def f():\n    from slicer_compile.backends.tensorrt.runner import TensorrtRunner\n"
    tree_imports = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            tree_imports.add(node.module)
    home, allowed = rule_for("slicer_compile.backends.onnxrt.backend")
    assert not any(within(n, allowed | {home}) for n in tree_imports)
