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


# ---- the background writer (a training run's checkpoints) ---------------------------------------------------------


def test_background_writer_keeps_the_order_and_one_job_pending():
    import threading
    import time

    from aubench_cli.fileio import BackgroundWriter

    done, running = [], []

    def job(n):
        def run():
            running.append(threading.current_thread().name)
            time.sleep(0.05 if n == 0 else 0)  # the first is slow: the second must still land after it
            done.append(n)
        return run

    writer = BackgroundWriter()
    writer.submit(job(0))
    writer.submit(job(1))  # waits for job 0 before it starts
    assert done == [0]
    writer.wait()
    assert done == [0, 1]
    assert running == ["aubench-writer"] * 2  # neither ran in the caller's thread


def test_background_writer_raises_a_jobs_error_in_the_callers_thread():
    import errno

    import pytest

    from aubench_cli.fileio import BackgroundWriter

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "run/last.pt")

    writer = BackgroundWriter()
    writer.submit(full_disk)
    with pytest.raises(OSError, match="No space left"):
        writer.submit(lambda: None)  # the next save sees the last one's error
    writer.submit(full_disk)
    with pytest.raises(OSError, match="No space left"):
        with writer:  # the end of training sees it too
            pass
    writer.submit(full_disk)
    with pytest.raises(KeyError):  # an error already on its way wins; the write error is not raised over it
        with writer:
            raise KeyError("the training loop's own error")
    writer.wait()  # that write error was dropped with the exception, not left for later
