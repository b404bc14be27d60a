"""Writes that are atomic: a temporary file beside the target, fsync, then one rename.

Bottom layer: every other module may use it; it uses only the standard library.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, never a part: a failed write (a full disk) leaves no temp.

    The temporary name is the writer's own (process and thread), so two processes writing one file (a study's
    lease, written by the launcher and by the job) never write into each other's temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            raise named(exc, path) from exc
        raise


def named(exc: OSError, path: str | Path) -> OSError:
    """The same error with the path it happened on (a failed write() or fsync() names none; the message should)."""
    if exc.filename is not None:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def check_writable(path: str | Path) -> None:
    """Raise the OSError a write would meet in folder ``path`` (or, when it does not exist yet, in the nearest
    folder above it that does): checked by creating and removing a probe file, before any work."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".aubench-write-check-", dir=folder)
    except OSError as exc:  # name the folder, not the probe
        raise type(exc)(exc.errno, exc.strerror, str(folder)) from None
    os.close(fd)
    os.unlink(probe)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class BackgroundWriter:
    """Runs one write job at a time in a thread of its own, so the caller goes on while it is written (a training
    run's checkpoints: the next epoch trains while the last one's are fsynced).

    ``submit`` first waits for the job before it, so jobs land in the order given and at most one is pending (one
    snapshot in memory). A job's error is raised by the next ``submit`` or ``wait``, in the caller's thread. As a
    context manager it waits on exit and raises a job's error unless another exception is already on its way (that
    one wins; the files are atomic either way). The thread is not a daemon: a process that ends finishes the write
    it began.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(job,), name="aubench-writer")
        self._thread.start()

    def _run(self, job) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by wait()
            self._error = exc

    def wait(self, raise_error: bool = True) -> None:
        """Block until the pending job is written; raise its error (unless ``raise_error`` is false)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.wait(raise_error=exc_type is None)
