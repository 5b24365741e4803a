"""Servers for the tests that need one to die: `slicer-compile serve` in a process of
its own, killed with SIGKILL (no goodbye, as a machine that loses power)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys


class ServerProcess:
    """`slicer-compile serve` in a process of its own, to be killed with SIGKILL."""

    def __init__(self, artifact_dir):
        self.process = subprocess.Popen([sys.executable, "-m", "slicer_compile.cli", "serve", str(artifact_dir),
                                         "--port", "0"], stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()
        found = re.search(r"http://(\S+) ", line)
        assert found, line
        self.url = found.group(1)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
