"""A crafted or damaged manifest costs a line, never a traceback: every field of the
manifest, of a split row and of a crossing tensor replaced by values of the wrong
type, and each artifact run through inspect, select and the server's model host."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from slicer_compile.artifact import write_manifest
from slicer_compile.cli.main import main
from slicer_compile.compiler import compile_model
from slicer_compile.errors import SlicerCompileError
from slicer_compile.runtime.host import ModelHost
from tests.models import EXAMPLES

WRONG_VALUES = [None, "x", [], {}, -1, 1e308, True, [[[[["deep"]]]]]]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_model(EXAMPLES / "digits_cnn.onnx", device="jetson", out_dir=tmp_path_factory.mktemp("c") / "out",
                         max_pairs=2)


def mutations(manifest: dict):
    """(label, mutated manifest) for each field at three depths and each wrong value."""
    split = next(i for i, s in enumerate(manifest["splits"]) if s["files"])
    places = [((), key) for key in manifest] + [(("splits", split), key) for key in manifest["splits"][split]]
    places += [(("splits", split, "crossing", 0), key) for key in manifest["splits"][split]["crossing"][0]]
    return mutations_at(manifest, places)


def mutations_at(manifest: dict, places: list[tuple[tuple, str]]):
    """(label, mutated manifest) for each (path, key) of ``places`` set to each wrong value."""
    for path, key in places:
        for value in WRONG_VALUES:
            mutated = copy.deepcopy(manifest)
            target = mutated
            for step in path:
                target = target[step]
            target[key] = value
            yield f"{'/'.join(map(str, path + (key,)))}={json.dumps(value)[:12]}", mutated


def cli_outcome(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:  # anything else escaping main() is a traceback
        main(args)
    return exited.value.code, capsys.readouterr().err


def test_every_field_of_the_wrong_type_is_one_line(compiled, tmp_path, capsys):
    manifest = json.loads((compiled.path / "manifest.json").read_text())
    outcomes = {"refused": 0, "accepted": 0}
    for label, mutated in mutations(manifest):
        folder = tmp_path / "a"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(compiled.path, folder)
        write_manifest(folder, mutated)
        for args in (["inspect", str(folder)],
                     ["select", str(folder), "--bandwidth", "10MHz", "--snr-db", "10", "--deadline", "50ms",
                      "--memory", "2GB"]):
            code, err = cli_outcome(args, capsys)
            assert "Traceback" not in err, (label, err)
            if code not in (0, 3):
                assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (label, args[0], err)
        try:
            ModelHost(folder).stop_models()
            outcomes["accepted"] += 1
        except SlicerCompileError:
            outcomes["refused"] += 1
    # Most of those are refused at load; fields no command reads (tool_version, created) are not.
    assert outcomes["refused"] > 3 * outcomes["accepted"]


@pytest.mark.parametrize("split_id", ["../../escape", "/etc", "s0000/../../x"])
def test_a_split_id_that_is_a_path_writes_nothing_outside(compiled, tmp_path, capsys, split_id):
    folder = tmp_path / "a"
    shutil.copytree(compiled.path, folder)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = cli_outcome(["materialize", str(folder), "--split", split_id], capsys)
    assert code != 0 and err.startswith("error: ") and "no split" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("centre", [{"axis": 9, "offset": []}, {"axis": 1, "offset": [1.0] * 1000}, "x",
                                    {"axis": 1, "offset": ["1e999"] * 64}])
def test_a_crafted_centre_is_one_line(compiled, tmp_path, capsys, centre):
    manifest = json.loads((compiled.path / "manifest.json").read_text())
    split = next(s for s in manifest["splits"] if s["files"])
    activation = next(t for t in split["crossing"] if t["kind"] == "activation")
    activation["centre"] = centre
    shutil.copytree(compiled.path, tmp_path / "a")
    write_manifest(tmp_path / "a", manifest)
    code, err = cli_outcome(["inspect", str(tmp_path / "a")], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "centre" in err, err
