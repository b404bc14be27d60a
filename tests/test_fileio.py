"""Atomic writes: two processes writing one file (a study's lease: the launcher and the job) never meet in a
temporary file, and the file always holds one writer's whole content."""

from __future__ import annotations

import subprocess
import sys

WRITER = """
import sys
from pathlib import Path
from aubench_cli.fileio import atomic_write_text
path, mark = Path(sys.argv[1]), sys.argv[2]
for i in range(400):
    atomic_write_text(path, mark * 2000)
"""


def test_two_processes_writing_one_file_never_collide(tmp_path):
    path = tmp_path / "lease.json"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), mark], stderr=subprocess.PIPE, text=True)
             for mark in "ab"]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert path.read_text() in ("a" * 2000, "b" * 2000)
    assert [p.name for p in tmp_path.iterdir()] == ["lease.json"]  # no temporary file left behind
