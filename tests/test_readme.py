"""The README's commands and snippets, run as written (install steps aside)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(language: str = "") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    main_job, tests = quick_start_commands()
    assert "pip install ." in main_job and "slicer-compile" in main_job
    assert tests.endswith("pytest") and '.[test]' in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_main_job_runs(tmp_path):
    main_job = quick_start_commands()[0]
    command = main_job.split("&&")[-1].strip()  # the install steps are what CI itself does
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    args = shlex.split(command)
    assert args[0] == "slicer-compile"
    result = subprocess.run([sys.executable, "-m", "slicer_compile.cli", *args[1:]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["device"]["name"] == "orin-nano" and manifest["calibration"]["status"] == "measured"


def test_codec_snippet_runs():
    snippet = next(block for block in code_blocks("python") if "from slicer_compile.codec import" in block)
    exec(compile(snippet, "README.md", "exec"), {})
