"""The preprocessed-face cache: its on-disk format, the per-video writer, and ``open_cache`` to read it.

A cache is one folder whose cost does not grow with its number of videos: every per-frame array is one packed
file, each video a contiguous run of rows in all of them, so a batch of frames is a fancy index into one memory
map whatever the number of videos::

    cache.json        versioned header: format, AU names, source, settings, subject splits, summary, and (after a
                      run) the listing of every finished video: id, subject, frames, first row, image byte range,
                      checksum
    images.u8         (N, 96, 96) uint8    the crops, raw, memory-mapped
    labels.i8         (N, K) int8          1 present, 0 absent, -1 unknown
    frame.i32         (N,) int32           the frame's 0-based index in its video
    key.i32           (N,) int32           the frame's label key (the row it took from the label file)
    detected.u8       (N,) uint8           found by a full-frame detection (1) or followed (0)
    landmarks.f32     (N, 4, 2) float32    eye corners, nose tip, chin in frame pixels
    transform.f32     (N, 2, 3) float32    frame pixels -> crop pixels
    videos.jsonl      the journal: one line per committed video (the source of truth while writing)
    reports.jsonl     each video's report (frames read, faces, mismatches...), written before its journal line
    staging/          videos being written, one temp file of crops each (never read)

Writing a video: the worker streams its crops into ``staging/.tmp-<id>-<random>.u8`` (no lock held), then, under an
append lock (``flock``), copies them to the end of the packed files, fsyncs them, appends the report and last the
journal line, fsynced. The journal line is the moment the video exists: a writer killed anywhere before it
leaves rows past the journal's end, which no reader looks at and the next writer truncates. A later journal line
for the same id supersedes the earlier one (a video redone or its labels refreshed), and ``removed`` lines drop a
video; superseded rows are dead space until ``consolidate`` compacts them (at the end of a run that made any).
``consolidate`` also writes the video listing into ``cache.json`` with the journal's size, so opening a cache
reads one small JSON file; a journal longer than that (an interrupted run) is read line by line instead.

Damage and absence are told apart from the header alone: a video listed with rows ``[row, row + frames)`` is
absent when a packed file is shorter than that (a ``stat``), and damaged when its bytes do not hash to its
``checksum`` (blake2b-128 over its images, then labels, frame, key, detected, landmarks and transform bytes).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from aubench_cli import __version__
from aubench_cli.errors import UsageError
from aubench_cli.fileio import named

try:  # POSIX; elsewhere the locks fall back to exclusive-create lock files
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT_NAME = "aubench-cache"
FORMAT_VERSION = 2
HEADER_FILE = "cache.json"
JOURNAL_FILE = "videos.jsonl"
REPORTS_FILE = "reports.jsonl"
STAGING_DIR = "staging"
LOCK_FILE = ".lock"
APPEND_LOCK_FILE = ".append.lock"
_TMP_PREFIX = ".tmp-"
_COMPACT_PREFIX = ".compact-"

# name -> (file, dtype, per-row shape given K AUs and crop size S); images first: it is the one that is large
def _columns(k: int, size: int) -> dict[str, tuple[str, np.dtype, tuple[int, ...]]]:
    return {
        "images": ("images.u8", np.dtype(np.uint8), (size, size)),
        "labels": ("labels.i8", np.dtype(np.int8), (k,)),
        "frame": ("frame.i32", np.dtype("<i4"), ()),
        "key": ("key.i32", np.dtype("<i4"), ()),
        "detected": ("detected.u8", np.dtype(np.uint8), ()),
        "landmarks": ("landmarks.f32", np.dtype("<f4"), (4, 2)),
        "transform": ("transform.f32", np.dtype("<f4"), (2, 3)),
    }


# the per-frame arrays other than the crops: dtype and row shape given K
_SMALL: dict[str, tuple[str, Any]] = {
    "labels": ("i1", lambda k: (k,)),
    "frame": ("<i4", lambda k: ()),
    "key": ("<i4", lambda k: ()),
    "detected": ("u1", lambda k: ()),
    "landmarks": ("<f4", lambda k: (4, 2)),
    "transform": ("<f4", lambda k: (2, 3)),
}


def _row_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return int(dtype.itemsize * int(np.prod(shape, dtype=np.int64)))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_header(path: Path) -> dict:
    """The header of the cache at ``path``; UsageError (with the fix) when missing or of another version."""
    path = Path(path)
    header_path = path / HEADER_FILE
    if not header_path.is_file():
        if headless_cache(path):
            raise UsageError(
                f"cache {path} has lost its header {HEADER_FILE} (deleted?): its settings are unknown, so its videos "
                "cannot be read or resumed", f"rebuild it with 'aubench preprocess INPUT --out {path} --overwrite'")
        if path.is_dir() and any(p.name not in (LOCK_FILE, APPEND_LOCK_FILE) for p in path.iterdir()):
            raise UsageError(
                f"{path} is not an aubench cache (no {HEADER_FILE})", "give the --out folder of 'aubench preprocess'"
            )
        raise UsageError(f"no aubench cache at {path}", f"make one with 'aubench preprocess INPUT --out {path}'")
    try:
        header = json.loads(header_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"the cache header {header_path} is damaged ({exc}): the cache's settings are unknown",
            f"rebuild it with 'aubench preprocess INPUT --out {path} --overwrite'"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise UsageError(f"{header_path} is not an aubench cache header", "give the --out folder of 'aubench preprocess'")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise UsageError(
            f"cache {path} has format version {version}; this aubench ({__version__}) reads version {FORMAT_VERSION}",
            f"re-run 'aubench preprocess INPUT --out {path} --overwrite' to rebuild it",
        )
    return header


def headless_cache(path: Path) -> bool:
    """A folder that holds a cache's journal or packed files but no header (deleted or never written)."""
    path = Path(path)
    return not (path / HEADER_FILE).exists() and any((path / f).exists() for f in _DATA_FILES)


def _shape_of(cache_dir: Path) -> tuple[int, int]:
    """(K AUs, crop size) from the header: what every packed file's row size follows from."""
    header = read_header(cache_dir)
    return len(header["au_names"]), int(header.get("settings", {}).get("crop_size", 96))


# -- locks ---------------------------------------------------------------------------------------------------------


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Blocking exclusive lock on ``path`` (released by the kernel if this process dies)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with that pid exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CacheLock:
    """One writer at a time.

    An ``flock`` on ``.lock`` (which also holds the writer's pid, for the message): the kernel drops it when the
    writer dies, so a stale lock is no state at all and cannot be taken over twice. The file itself is never
    deleted (deleting it would let a second writer lock a fresh file while the first still holds the old one).
    Without ``fcntl`` it falls back to an exclusive-create lock file holding the pid.
    """

    def __init__(self, cache_dir: Path):
        self.path = Path(cache_dir) / LOCK_FILE
        self._fd: int | None = None

    def _busy(self, pid: int) -> UsageError:
        who = f" (pid {pid})" if pid else ""
        return UsageError(f"another aubench preprocess{who} is writing {self.path.parent}",
                          "wait for it to finish, or use another --out")

    def _read_pid(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def __enter__(self) -> CacheLock:
        if fcntl is None:  # pragma: no cover - Windows
            return self._enter_exclusive_create()
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._busy(self._read_pid()) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def _enter_exclusive_create(self) -> CacheLock:  # pragma: no cover - Windows
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = self._read_pid()
            if pid and pid_alive(pid):
                raise self._busy(pid) from None
            raise UsageError(f"a stale lock {self.path} is left by a process that is gone",
                             f"remove {self.path} if no aubench is running") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:  # pragma: no cover - Windows
            self.path.unlink(missing_ok=True)
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class OwnerGone(RuntimeError):
    """The process that holds (held) the cache's lock for this writer is gone: nothing may be written."""


def check_owner(cache_dir: Path, owner: int | None) -> None:
    """Raise ``OwnerGone`` unless process ``owner`` still holds the cache's writer lock (``None``: no owner to
    check, a writer used on its own). A worker whose command died, or left after an error, commits nothing."""
    if owner is None:
        return
    lock = Path(cache_dir) / LOCK_FILE
    try:
        holder = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        holder = 0
    if holder != owner or not pid_alive(owner):
        raise OwnerGone(f"the lock of {cache_dir} is no longer held by process {owner}: not writing")
    if fcntl is None:  # pragma: no cover - Windows: the pid is the lock
        return
    fd = os.open(lock, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # held (by the owner, whose pid it holds): write
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise OwnerGone(f"the lock of {cache_dir} is no longer held by process {owner}: not writing")
    finally:
        os.close(fd)


# -- the journal ----------------------------------------------------------------------------------------------------


def _journal_tail(path: Path) -> tuple[int, dict | None]:
    """(length of the journal's complete lines in bytes, its last complete entry): O(1) whatever its length."""
    journal = path / JOURNAL_FILE
    try:
        size = journal.stat().st_size
    except FileNotFoundError:
        return 0, None
    with open(journal, "rb") as fh:
        block = 1 << 12
        start = max(0, size - block)
        fh.seek(start)
        data = fh.read()
        while start > 0 and data.count(b"\n") < 2:  # a last line longer than the block: read further back
            start = max(0, start - block)
            fh.seek(start)
            data = fh.read()
    end = data.rfind(b"\n")
    if end < 0:
        return 0, None
    complete = start + end + 1
    prev = data.rfind(b"\n", 0, end)
    line = data[prev + 1:end]
    try:
        return complete, json.loads(line)
    except json.JSONDecodeError:
        return complete, None


def _committed_rows(path: Path) -> tuple[int, int]:
    """(journal bytes, rows the packed files hold up to the last committed video)."""
    size, last = _journal_tail(path)
    if last is not None and not isinstance(last.get("end") if isinstance(last, dict) else None, int):
        last = None
    if last is None and size:  # the last complete line does not parse (damaged bytes): ask every line
        return size, max((int(e.get("end", 0)) for e in read_journal(path)), default=0)
    return size, int(last["end"]) if last else 0


def _repair_tail(path: Path) -> None:
    """Under the append lock: cut a half-written journal line and packed rows past the last commit, and drop
    damaged journal lines (bytes changed on disk; the videos they named are redone as never written)."""
    size, end = _committed_rows(path)
    journal = path / JOURNAL_FILE
    if journal.exists() and journal.stat().st_size != size:
        os.truncate(journal, size)
    entries, damaged = _read_journal(path)
    if damaged:
        _write_journal(path, entries)
    k, s = _shape_of(path)
    for name, dtype, shape in _columns(k, s).values():
        f = path / name
        want = end * _row_bytes(dtype, shape)
        if f.exists() and f.stat().st_size > want:
            os.truncate(f, want)


def _trim_partial_line(path: Path, complete: int | None = None) -> None:
    """Cut a half-written last line (a writer killed mid-line), so the next line starts on its own."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if complete is None:
        if size == 0:
            return
        with open(path, "rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            start = size
            while start > 0:
                start = max(0, start - (1 << 16))
                fh.seek(start)
                data = fh.read(size - start)
                cut = data.rfind(b"\n")
                if cut >= 0:
                    complete = start + cut + 1
                    break
            else:
                complete = 0
    if size != complete:
        os.truncate(path, complete)


def _append_line(path: Path, entry: dict, sync: bool = True) -> None:
    with open(path, "ab") as fh:
        fh.write((json.dumps(entry, separators=(",", ":")) + "\n").encode())
        fh.flush()
        if sync:
            os.fsync(fh.fileno())


def read_journal(cache_dir: str | Path) -> list[dict]:
    """Every complete journal line, in order (a half-written last line is left out, damaged lines skipped)."""
    return _read_journal(Path(cache_dir))[0]


_ENTRY_KEYS = ("id", "end")


def _read_journal(cache_dir: Path) -> tuple[list[dict], int]:
    """(complete, well-formed journal lines in order, how many complete lines were damaged and skipped)."""
    journal = Path(cache_dir) / JOURNAL_FILE
    if not journal.is_file():
        return [], 0
    out, damaged = [], 0
    with open(journal, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                entry = None
            if not isinstance(entry, dict) or any(k not in entry for k in _ENTRY_KEYS) or (
                    not entry.get("removed") and any(k not in entry for k in ("n", "row", "checksum"))):
                damaged += 1
                continue
            out.append(entry)
    return out, damaged


def live_entries(cache_dir: str | Path) -> dict[str, dict]:
    """Finished videos by id, from the journal (the last line of an id wins; ``removed`` drops it), in row order."""
    return _live(read_journal(cache_dir))


def _live(lines: list[dict]) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    for e in lines:
        entries.pop(e["id"], None)
        if not e.get("removed"):
            entries[e["id"]] = e
    return dict(sorted(entries.items(), key=lambda kv: kv[1]["row"]))


def _write_journal(cache_dir: Path, lines: list[dict]) -> None:
    """Replace the journal with these lines, atomically (a temp file, fsync, one rename)."""
    tmp = Path(cache_dir) / f".{JOURNAL_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as out:
        for e in lines:
            out.write((json.dumps(e, separators=(",", ":")) + "\n").encode())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, Path(cache_dir) / JOURNAL_FILE)
    _fsync_dir(Path(cache_dir))


def _same_videos(entries: dict[str, dict], listing: dict[str, list]) -> bool:
    """Whether the journal's live videos are exactly the listing's (ids, frame counts, checksums)."""
    listed = {v: (int(n), c) for v, n, c in zip(listing["id"], listing["frames"], listing["checksum"])}
    return listed == {v: (int(e["n"]), e["checksum"]) for v, e in entries.items()}


def restore_journal(cache_dir: str | Path) -> list[str]:
    """Before a run on a finished cache: when the journal no longer holds every video of the header's listing
    (deleted, cut short or damaged since the run that wrote the listing), rewrite it from the listing. The
    videos' bytes are checked against their checksums afterwards like any other; a video whose journal line was
    lost also lost its input fingerprint, so it is kept as it is (``input`` null) until its input changes by
    name. Returns the ids whose lines were restored."""
    cache_dir = Path(cache_dir)
    header = read_header(cache_dir)
    listing = header.get("videos")
    if not listing:
        return []
    with _flock(cache_dir / APPEND_LOCK_FILE):
        lines, damaged = _read_journal(cache_dir)
        live = _live(lines)
        try:
            size = (cache_dir / JOURNAL_FILE).stat().st_size
        except FileNotFoundError:
            size = 0
        if _same_videos(live, listing) or not (damaged or size < int(header.get("journal_bytes") or 0)):
            return []  # intact, or newer than the listing (commits after it)
        rows = [int(r) for r in listing["row"]]
        ends = [r + int(n) for r, n in zip(rows, listing["frames"])]
        end = max(ends, default=0)
        lines, restored = [], []
        for vid, subject, n, row, checksum in sorted(zip(listing["id"], listing["subject"], listing["frames"], rows,
                                                         listing["checksum"]), key=lambda t: t[3]):
            old = live.get(vid)
            same = old is not None and (int(old["n"]), int(old["row"]), old["checksum"]) == (int(n), row, checksum)
            if not same:
                restored.append(vid)
            lines.append({"id": vid, "subject": subject, "n": int(n), "row": row, "end": end, "checksum": checksum,
                          "input": old.get("input") if same else None, "written": old.get("written") if same else now(),
                          **({} if same else {"restored": True})})
        _write_journal(cache_dir, lines)
    return restored


def finished_videos(cache_dir: Path) -> set[str]:
    """Ids of the videos committed to the journal."""
    return set(live_entries(cache_dir))


def record_input(cache_dir: Path, video_id: str, fingerprint: dict) -> None:
    """Store a video's new input fingerprint without touching its rows (same content, new mtimes)."""
    with _flock(Path(cache_dir) / APPEND_LOCK_FILE):
        entry = live_entries(cache_dir).get(video_id)
        if entry is None:
            return
        _, end = _committed_rows(Path(cache_dir))
        _append_line(Path(cache_dir) / JOURNAL_FILE, {**entry, "input": fingerprint, "end": end})


def remove_video(cache_dir: Path, video_id: str) -> None:
    """Drop a video from the cache (its rows become dead space); used before redoing a video whose input changed."""
    with _flock(Path(cache_dir) / APPEND_LOCK_FILE):
        _, end = _committed_rows(Path(cache_dir))
        _append_line(Path(cache_dir) / JOURNAL_FILE, {"id": video_id, "removed": True, "end": end})


# -- writing --------------------------------------------------------------------------------------------------------


class VideoWriter:
    """Writes one video: crops stream into a staging folder, ``commit`` appends them to the packed files under the
    append lock and journals the video, ``abort`` removes the staging folder.

    A long video need not fit in memory (crops go to disk as they come); the small per-frame arrays are kept in
    lists until commit.
    """

    def __init__(self, cache_dir: Path, video_id: str, n_aus: int, size: int = 96, sync: bool = True,
                 owner: int | None = None):
        self.cache = Path(cache_dir)
        self.owner = owner  # pid of the process holding the cache's lock for this writer (a worker's command)
        self.sync = sync  # fsync before journaling; only a benchmark building a throw-away cache turns it off
        self._sparse = False
        self.video_id = video_id
        staging = self.cache / STAGING_DIR
        staging.mkdir(parents=True, exist_ok=True)
        self.tmp = staging / f"{_TMP_PREFIX}{video_id}-{uuid.uuid4().hex[:8]}.u8"  # its crops, as they come
        self.size = size
        self.n_aus = n_aus
        self._images: Any = None  # opened on the first crop (a sparse benchmark video never has one)
        self._hash = hashlib.blake2b(digest_size=16)
        self._buffer: list[np.ndarray] = []
        self.count = 0
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in _SMALL}

    def add(self, crop: np.ndarray, labels: np.ndarray, frame: int, landmarks: np.ndarray, transform: np.ndarray,
            detected: bool, key: int | None = None) -> None:
        """One frame; ``key`` is its label key (defaults to ``frame``)."""
        if crop.shape != (self.size, self.size) or crop.dtype != np.uint8:
            raise ValueError(f"crop must be ({self.size}, {self.size}) uint8, got {crop.shape} {crop.dtype}")
        if self._sparse:
            raise ValueError("a video is either sparse or not")
        self._stage()
        self._buffer.append(crop)
        if len(self._buffer) >= 256:
            self._flush()
        row = {"labels": labels, "frame": frame, "key": frame if key is None else key, "detected": detected,
               "landmarks": landmarks, "transform": transform}
        for name, (dtype, shape) in _SMALL.items():
            self._parts[name].append(np.asarray(row[name], dtype=dtype).reshape(1, *shape(self.n_aus)))
        self.count += 1

    def add_block(self, images: np.ndarray | None, labels: np.ndarray, frame: np.ndarray, key: np.ndarray,
                  detected: np.ndarray, landmarks: np.ndarray, transform: np.ndarray) -> None:
        """Many frames at once (a label refresh copying a video's rows, a benchmark building a large cache).

        ``images=None`` leaves the video's crops a hole in the packed file (all zero, taking no disk space), its
        checksum then covers the other arrays only and says ``sparse:``: for benchmark caches of 10M frames."""
        n = len(frame)
        self._flush()
        if images is None:
            if self.count and not self._sparse:
                raise ValueError("a video is either sparse or not")
            self._sparse = True
        else:
            if self._sparse:
                raise ValueError("a video is either sparse or not")
            images = np.ascontiguousarray(images, dtype=np.uint8).reshape(n, self.size, self.size)
            data = images.tobytes()
            self._stage().write(data)
            self._hash.update(data)
        block = {"labels": labels, "frame": frame, "key": key, "detected": detected, "landmarks": landmarks,
                 "transform": transform}
        for name, (dtype, shape) in _SMALL.items():
            self._parts[name].append(np.asarray(block[name], dtype=dtype).reshape(n, *shape(self.n_aus)))
        self.count += n

    def _flush(self) -> None:
        if self._buffer:
            data = np.ascontiguousarray(np.stack(self._buffer)).tobytes()
            self._stage().write(data)
            self._hash.update(data)
            self._buffer = []

    def _stage(self):
        if self._images is None:
            self._images = open(self.tmp, "xb")
        return self._images

    def _small_arrays(self) -> dict[str, np.ndarray]:
        return {name: (np.concatenate(self._parts[name]) if self._parts[name]
                       else np.zeros((0, *shape(self.n_aus)), dtype=dtype))
                for name, (dtype, shape) in _SMALL.items()}

    def commit(self, meta: dict, input_fingerprint: dict | None = None) -> dict:
        """Append the video to the packed files and journal it (the moment it counts as done); returns its entry.

        Rows are written at their offsets (``pwrite``), not appended: whatever a killed writer left past the
        journal's end is overwritten or lies beyond it, never read."""
        self._flush()
        if self._images is not None:
            self._images.close()
        small = self._small_arrays()
        for arr in small.values():
            self._hash.update(arr.tobytes())
        checksum = ("sparse:" if self._sparse else "") + self._hash.hexdigest()
        columns = _columns(self.n_aus, self.size)
        with _flock(self.cache / APPEND_LOCK_FILE):
            check_owner(self.cache, self.owner)
            journal_size, row = _committed_rows(self.cache)
            for name, (file, dtype, shape) in columns.items():
                offset = row * _row_bytes(dtype, shape)
                fd = os.open(self.cache / file, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    self._write_rows(fd, name, offset, dtype, shape, small)
                except OSError as exc:  # a full disk: say which file (rows past the journal's end are never read)
                    raise named(exc, self.cache / file) from exc
                finally:
                    os.close(fd)
            entry = {"id": self.video_id, "subject": meta.get("subject"), "n": self.count, "row": row,
                     "end": row + self.count, "checksum": checksum, "input": input_fingerprint, "written": now()}
            try:
                _trim_partial_line(self.cache / REPORTS_FILE)
                _append_line(self.cache / REPORTS_FILE, {**meta, "video": self.video_id, "n": self.count,
                                                         "checksum": checksum, "written": entry["written"]}, self.sync)
                check_owner(self.cache, self.owner)  # the rows are written; the journal line is the commit
                _trim_partial_line(self.cache / JOURNAL_FILE, journal_size)
                _append_line(self.cache / JOURNAL_FILE, entry, self.sync)
            except OSError as exc:
                raise named(exc, self.cache / JOURNAL_FILE) from exc
        self.tmp.unlink(missing_ok=True)
        return entry

    def _write_rows(self, fd: int, name: str, offset: int, dtype: np.dtype, shape: tuple[int, ...],
                    small: dict[str, np.ndarray]) -> None:
        """One packed file's rows of this video, at ``offset``, fsynced."""
        if name == "images" and self._sparse:
            os.ftruncate(fd, offset)  # drop a dead tail, so the hole below reads as zeros
            os.ftruncate(fd, offset + self.count * _row_bytes(dtype, shape))
        elif name == "images":
            if self._images is not None:
                with open(self.tmp, "rb") as src:
                    pos = offset
                    while chunk := src.read(1 << 22):
                        pos += os.pwrite(fd, chunk, pos)
        else:
            os.pwrite(fd, small[name].tobytes(), offset)
        if self.sync:
            os.fsync(fd)

    def abort(self) -> None:
        if self._images is not None and not self._images.closed:
            self._images.close()
        self.tmp.unlink(missing_ok=True)


ShardWriter = VideoWriter  # the name of the writer in format 1, kept for callers


def remove_partial_shards(cache_dir: Path) -> list[str]:
    """Delete staging files left by an interrupted run; returns their names (for the report)."""
    staging = Path(cache_dir) / STAGING_DIR
    removed = []
    if staging.is_dir():
        for p in sorted(staging.iterdir()):
            if p.name.startswith(_TMP_PREFIX):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed


# Settings whose change makes existing rows wrong: a rerun with other values must start a new cache.
COMPATIBLE_KEYS = ("source", "au_names", "settings")
_DATA_FILES = tuple(f for f, _, _ in _columns(1, 1).values()) + (JOURNAL_FILE, REPORTS_FILE)


def prepare_cache(cache_dir: Path, header: dict, overwrite: bool = False) -> tuple[set[str], list[str]]:
    """Create or reopen the cache folder for writing ``header``; returns (finished video ids, removed temp dirs).

    An existing cache made with other settings is refused (its rows would mix two preprocessings) unless
    ``overwrite``; a folder that holds something other than a cache is never deleted. Rows past the journal's end
    (a writer killed mid-append) are cut off here.
    """
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise UsageError(f"--out {cache_dir} is a file", "give a folder for the cache")
    if cache_dir.is_dir() and any(p.name not in (LOCK_FILE, APPEND_LOCK_FILE) for p in cache_dir.iterdir()):
        if not (cache_dir / HEADER_FILE).is_file() and not headless_cache(cache_dir):
            raise UsageError(f"--out {cache_dir} is a non-empty folder that is not an aubench cache", "choose another --out")
        if overwrite:
            # nothing of the old cache may survive: a compaction interrupted after its COMPLETE marker would
            # otherwise be rolled forward below and bring the old journal and rows back
            for work in cache_dir.glob(f"{_COMPACT_PREFIX}*"):
                shutil.rmtree(work)
            shutil.rmtree(cache_dir / STAGING_DIR, ignore_errors=True)
            for name in _DATA_FILES:
                (cache_dir / name).unlink(missing_ok=True)
            shutil.rmtree(cache_dir / "shards", ignore_errors=True)  # a format-1 cache being rebuilt
            (cache_dir / "index.npz").unlink(missing_ok=True)
            (cache_dir / HEADER_FILE).unlink(missing_ok=True)
        else:
            old = read_header(cache_dir)
            for key in COMPATIBLE_KEYS:
                if _comparable(key, old.get(key)) != _comparable(key, header.get(key)):
                    what = key.replace("_", " ")
                    raise UsageError(
                        f"cache {cache_dir} was made with other {what}: {_diff(old.get(key), header.get(key))}",
                        "pass --overwrite to rebuild it, or choose another --out",
                    )
            header = {**header, "created": old.get("created", header.get("created"))}
    (cache_dir / STAGING_DIR).mkdir(parents=True, exist_ok=True)
    removed = remove_partial_shards(cache_dir)
    with _flock(cache_dir / APPEND_LOCK_FILE):
        _finish_compaction(cache_dir)
    header = {k: v for k, v in header.items() if k not in ("videos", "journal_bytes")}
    _write_json_atomic(cache_dir / HEADER_FILE, header)
    with _flock(cache_dir / APPEND_LOCK_FILE):
        _repair_tail(cache_dir)
    return finished_videos(cache_dir), removed


def _comparable(key: str, value: Any) -> Any:
    """A header value as compared between runs: settings without ``crop_pipeline`` were made by version 1."""
    if key == "settings" and isinstance(value, dict):
        return {"crop_pipeline": 1, **value}
    return value


def _diff(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return "; ".join(f"{k} was {old.get(k)!r}, now {new.get(k)!r}" for k in keys[:3])
    return f"was {old!r}, now {new!r}"


def write_header(cache_dir: Path, header: dict) -> None:
    _write_json_atomic(Path(cache_dir) / HEADER_FILE, header)


def _listing(entries: dict[str, dict], size: int) -> dict[str, list]:
    """The header's columnar video listing (columns, so 50,000 videos stay a few MB once parsed)."""
    rows = [int(e["row"]) for e in entries.values()]
    ns = [int(e["n"]) for e in entries.values()]
    frame_bytes = size * size
    return {
        "id": list(entries), "subject": [e.get("subject") for e in entries.values()], "frames": ns, "row": rows,
        "image_bytes": [[r * frame_bytes, (r + n) * frame_bytes] for r, n in zip(rows, ns)],
        "checksum": [e["checksum"] for e in entries.values()],
    }


def consolidate(cache_dir: str | Path, header: dict | None = None) -> dict:
    """End of a run: compact dead rows away (if any), then write the header with the listing of every finished
    video and the journal's size (what lets ``open_cache`` skip the journal). Returns the header written."""
    cache_dir = Path(cache_dir)
    with _flock(cache_dir / APPEND_LOCK_FILE):
        _repair_tail(cache_dir)
        header = dict(header if header is not None else read_header(cache_dir))
        k, s = len(header["au_names"]), int(header.get("settings", {}).get("crop_size", 96))
        entries = live_entries(cache_dir)
        _, end = _committed_rows(cache_dir)
        if sum(int(e["n"]) for e in entries.values()) != end:
            entries = _compact(cache_dir, entries, k, s)
        size, _ = _journal_tail(cache_dir)
        header["videos"] = _listing(entries, s)
        header["journal_bytes"] = size
        _write_json_atomic(cache_dir / HEADER_FILE, header)
    return header


def _compact(cache_dir: Path, entries: dict[str, dict], k: int, s: int) -> dict[str, dict]:
    """Rewrite the packed files and the journal with only the live videos, rows in order, then swap them in.

    The new files are written and fsynced in ``.compact-<random>/``, then a ``COMPLETE`` marker; from that moment
    the compaction rolls forward: the files are renamed into place, the journal last. A crash during the renames
    leaves the marked folder, which ``open_cache`` refuses to read past and the next writer finishes
    (``_finish_compaction``). Called under the append lock, during a run (the cache lock is held)."""
    work = cache_dir / f"{_COMPACT_PREFIX}{uuid.uuid4().hex[:8]}"
    work.mkdir()
    columns = _columns(k, s)
    new_entries: dict[str, dict] = {}
    row = 0
    for vid, e in entries.items():
        new_entries[vid] = {**e, "row": row, "end": row + int(e["n"])}
        row += int(e["n"])
    for file, dtype, shape in columns.values():
        rb = _row_bytes(dtype, shape)
        with open(cache_dir / file, "rb") as src, open(work / file, "wb") as out:
            for e in entries.values():
                src.seek(int(e["row"]) * rb)
                remaining = int(e["n"]) * rb
                while remaining:
                    chunk = src.read(min(remaining, 1 << 22))
                    if not chunk:
                        raise UsageError(f"cache {cache_dir}: {file} is shorter than its journal says",
                                         "re-run 'aubench preprocess' with --overwrite")
                    out.write(chunk)
                    remaining -= len(chunk)
            out.flush()
            os.fsync(out.fileno())
    with open(work / JOURNAL_FILE, "wb") as out:
        for e in new_entries.values():
            out.write((json.dumps(e, separators=(",", ":")) + "\n").encode())
        out.flush()
        os.fsync(out.fileno())
    (work / "COMPLETE").write_text("renaming\n")
    _fsync_dir(work)
    _finish_compaction(cache_dir)
    return new_entries


def _pending_compaction(cache_dir: Path) -> Path | None:
    for p in sorted(Path(cache_dir).glob(f"{_COMPACT_PREFIX}*")):
        if (p / "COMPLETE").is_file():
            return p
    return None


def _finish_compaction(cache_dir: Path) -> None:
    """Roll a marked compaction forward (its files into place, the journal last); drop unmarked ones."""
    work = _pending_compaction(cache_dir)
    if work is not None:
        for file in [f for f in _DATA_FILES if f not in (JOURNAL_FILE, REPORTS_FILE)] + [JOURNAL_FILE]:
            if (work / file).exists():
                os.replace(work / file, cache_dir / file)
        _fsync_dir(cache_dir)
    for p in Path(cache_dir).glob(f"{_COMPACT_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


# -- reading --------------------------------------------------------------------------------------------------------


def missing_videos(path: Path, table: dict[str, list], k: int, size: int) -> dict[str, str]:
    """Videos of ``table`` (the listing's columns) whose rows lie past the end of a packed file, with what is
    missing: one ``stat`` per file, nothing read."""
    path = Path(path)
    rows = np.asarray(table["row"], dtype=np.int64)
    counts = np.asarray(table["frames"], dtype=np.int64)
    ends = rows + counts
    out: dict[str, str] = {}
    for file, dtype, shape in _columns(k, size).values():
        try:
            have = (path / file).stat().st_size
        except FileNotFoundError:
            have = None
        rb = _row_bytes(dtype, shape)
        avail = 0 if have is None else have // rb
        for i in np.flatnonzero((ends > avail) & (counts > 0)).tolist():
            out.setdefault(table["id"][i], f"{file} is missing" if have is None else
                           f"{file} holds {avail} rows, the video needs rows {rows[i]}-{ends[i] - 1}")
    return out


def verify_videos(path: str | Path, table: dict[str, list] | None = None, full: bool = True) -> dict[str, str]:
    """Damaged or missing videos: {id: what is wrong}. Sizes first (``missing_videos``), then, with ``full``,
    every other video's bytes hashed against its checksum (reads the whole cache once, sequentially).
    ``table``: the videos to check (by default every finished video of the journal)."""
    path = Path(path)
    k, size = _shape_of(path)
    if table is None:
        table = _table_from_entries(live_entries(path))
    bad = missing_videos(path, table, k, size)
    if not full:
        return bad
    columns = _columns(k, size)
    fds: dict[str, int] = {}
    try:
        for name, (file, _, _) in columns.items():
            if (path / file).exists():
                fds[name] = os.open(path / file, os.O_RDONLY)
        for vid, row, n, checksum in zip(table["id"], table["row"], table["frames"], table["checksum"]):
            if vid in bad:
                continue
            sparse = str(checksum).startswith("sparse:")
            h = hashlib.blake2b(digest_size=16)
            for name, (file, dtype, shape) in columns.items():
                if name == "images" and sparse:
                    continue
                rb = _row_bytes(dtype, shape)
                pos, left = int(row) * rb, int(n) * rb
                while left:
                    chunk = os.pread(fds[name], min(left, 1 << 22), pos) if name in fds else b""
                    if not chunk:
                        break
                    h.update(chunk)
                    pos, left = pos + len(chunk), left - len(chunk)
            if ("sparse:" if sparse else "") + h.hexdigest() != checksum:
                bad[vid] = "its bytes do not match its checksum"
    finally:
        for fd in fds.values():
            os.close(fd)
    return bad


def damaged_error(path: Path, header: dict, damaged: dict[str, str]) -> UsageError:
    """The one-line error for listed videos whose data is missing or damaged, with the command that redoes them."""
    names = list(damaged)
    shown = ", ".join(f"{v} ({damaged[v]})" for v in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return UsageError(f"cache {path} is damaged: {len(names)} video{'s' if len(names) != 1 else ''} with missing or "
                      f"damaged data: {shown}{more}", f"re-run '{_rerun_command(path, header)}' to redo them")


def _rerun_command(path: Path, header: dict) -> str:
    import shlex

    source = (header.get("source") or {}).get("path")
    return f"aubench preprocess {shlex.quote(source) if source else 'INPUT'} --out {shlex.quote(str(path))}"


def _video_table(path: Path, header: dict) -> tuple[dict[str, list], str | None]:
    """The finished videos to read, and what is wrong with the journal (or None).

    The header's listing when the journal is the size it recorded (a finished run); else the journal (a run going
    on or interrupted, or the crash window of a compaction, where the journal holds the listing's videos at new
    rows); but the listing when the journal lost some of its videos since (deleted, cut, damaged): the listing is
    the record of the finished run, and the next ``aubench preprocess`` restores the journal from it. (A journal
    longer than recorded has commits newer than the listing: it is read.)"""
    listing = header.get("videos")
    try:
        journal_size = (path / JOURNAL_FILE).stat().st_size
    except FileNotFoundError:
        journal_size = 0
    if listing is not None and header.get("journal_bytes") == journal_size:
        return listing, None
    lines, damaged = _read_journal(path)
    entries = _live(lines)
    shorter = listing is not None and journal_size < int(header.get("journal_bytes") or 0)
    if shorter and not _same_videos(entries, listing):
        lost = len(set(listing["id"]) - set(entries))
        return listing, (f"the journal {JOURNAL_FILE} lost {lost} of the listed videos" if lost else
                         f"the journal {JOURNAL_FILE} disagrees with the header's listing")
    if damaged and listing is None:
        raise UsageError(f"cache {path} is damaged: {damaged} line{'s' if damaged != 1 else ''} of its journal "
                         f"{JOURNAL_FILE} cannot be read", f"re-run '{_rerun_command(path, header)}' to redo the "
                         "videos they named")
    return _table_from_entries(entries), (f"{damaged} damaged journal lines" if damaged else None)


def verify_cache(path: str | Path) -> dict:
    """``aubench preprocess --verify``: every finished video checked (sizes, then bytes against checksums), and the
    journal against the header; writes nothing. Returns ``{"cache", "videos", "frames", "damaged": [{"video",
    "reason"}], "journal": problem or None, "ok", "fix"}``."""
    path = Path(path)
    header = read_header(path)
    if _pending_compaction(path) is not None:
        return {"cache": str(path), "videos": 0, "frames": 0, "damaged": [], "ok": False,
                "journal": "a compaction was interrupted", "fix": _rerun_command(path, header)}
    table, journal = _video_table(path, header)
    damaged = verify_videos(path, table, full=True)
    return {"cache": str(path), "videos": len(table["id"]), "frames": int(sum(int(n) for n in table["frames"])),
            "damaged": [{"video": v, "reason": r} for v, r in damaged.items()], "journal": journal,
            "ok": not damaged and journal is None, "fix": _rerun_command(path, header)}


def _memmap(path: Path, dtype: np.dtype, shape: tuple[int, ...], rows: int, random_access: bool = False) -> np.ndarray:
    if rows == 0:
        return np.zeros((0, *shape), dtype=dtype)
    have = path.stat().st_size if path.exists() else 0
    want = rows * _row_bytes(dtype, shape)
    if have < want:
        raise UsageError(f"cache file {path} holds {have} bytes, its journal lists {want}: the cache is damaged",
                         "re-run 'aubench preprocess' with --overwrite")
    mm = np.memmap(path, dtype=dtype, mode="r", shape=(rows, *shape))
    if random_access and hasattr(mmap, "MADV_RANDOM") and getattr(mm, "_mmap", None) is not None:
        # batches read 9 KB crops at random: the kernel's read-ahead around each fault (128 KB and more) would
        # only fill the page cache with neighbours no batch asked for
        try:
            mm._mmap.madvise(mmap.MADV_RANDOM)
        except (OSError, ValueError):
            pass
    # a plain ndarray over the map (its base keeps the map open): indexing it skips np.memmap's Python overhead
    return np.asarray(mm)


class PackedImages:
    """The crops as one (N, S, S) uint8 array-like over a memory map of ``images.u8``.

    Indexing with an int, a slice, an int array or a boolean mask returns a numpy array; only the requested
    frames are read (a batch of 96 is one fancy index into one map, whatever the number of videos). When the file
    holds dead rows (superseded videos after an interrupted run), ``position`` maps frame -> row.
    """

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, mm: np.ndarray, n: int, size: int, position: np.ndarray | None = None):
        self._mm = mm
        self._n = n
        self.size = size
        self._position = position

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._n, self.size, self.size)

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return self._n * self.size * self.size

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Crops for an array of frame indices, in that order."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        n = self._n
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"frame index out of range for a cache of {n} frames")
        if idx.size == 0:
            return np.empty((0, self.size, self.size), dtype=np.uint8)
        idx = np.where(idx < 0, idx + n, idx)
        if self._position is not None:
            idx = self._position[idx]
        return self._mm[idx]

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self._n if key < 0 else 0)
            if not 0 <= i < self._n:
                raise IndexError(f"frame {key} out of range for a cache of {self._n} frames")
            out = self.gather(np.array([i]))[0]
        else:
            if isinstance(key, slice):
                key = np.arange(self._n)[key]
            key = np.asarray(key)
            if key.dtype == bool:
                if key.shape != (self._n,):
                    raise IndexError(f"boolean index of shape {key.shape} for a cache of {self._n} frames")
                key = np.flatnonzero(key)
            out = self.gather(key)
        return out[(slice(None),) * (out.ndim - 2) + rest] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.gather(np.arange(self._n))
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return f"PackedImages(shape={self.shape})"


ShardedImages = PackedImages  # format 1's name


class CodedStrings:
    """A per-frame string column stored as integer codes into a small table (``cache.video``, ``subject``,
    ``split``): compares, indexes and iterates like a numpy str array without holding one string per frame."""

    def __init__(self, codes: Any, names: list[str]):
        self._codes = codes  # callable giving the (N,) int array, so it is built only when used
        self.names = list(names)

    @cached_property
    def codes(self) -> np.ndarray:
        return self._codes() if callable(self._codes) else np.asarray(self._codes)

    @property
    def shape(self) -> tuple[int]:
        return self.codes.shape

    def __len__(self) -> int:
        return len(self.codes)

    def _table(self) -> np.ndarray:
        return np.asarray(self.names, dtype=str) if self.names else np.zeros(0, str)

    def __eq__(self, other: Any) -> np.ndarray:  # type: ignore[override]
        if isinstance(other, str):
            if other not in self.names:
                return np.zeros(len(self), dtype=bool)
            return self.codes == self.names.index(other)
        return np.asarray(self) == other

    def __ne__(self, other: Any) -> np.ndarray:  # type: ignore[override]
        return ~self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Any) -> np.ndarray:
        wanted = [i for i, n in enumerate(self.names) if n in set(values)]
        return np.isin(self.codes, wanted)

    def __getitem__(self, key: Any) -> Any:
        picked = self.codes[key]
        if np.ndim(picked) == 0:
            return self.names[int(picked)]
        return self._table()[picked] if len(picked) else np.zeros(0, str)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._table()[self.codes] if len(self) else np.zeros(0, str)
        return out.astype(dtype) if dtype is not None else out

    def tolist(self) -> list[str]:
        return [self.names[c] for c in self.codes.tolist()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tolist())

    def __repr__(self) -> str:
        return f"CodedStrings({len(self)} frames, {len(self.names)} values)"


class Cache:
    """A preprocessed cache, read-only: a snapshot of the videos finished when it was opened.

    ``images`` (N, 96, 96) uint8 and the per-frame arrays ``labels`` (N, K) int8, ``frame`` (N,) int32,
    ``detected`` (N,) bool, ``landmarks`` (N, 4, 2) and ``transform`` (N, 2, 3) float32 are memory-mapped;
    ``au_names``; per-video tables ``videos``, ``video_subject``, ``video_counts``, ``video_offsets``, ``checksums``;
    ``subjects`` and ``subject_split``; ``video_index`` / ``subject_index`` (int32 codes, built on first use) and
    ``video``, ``subject``, ``split`` (``CodedStrings``: compare / index / iterate as str arrays); ``video_meta``
    (each video's report) on first use; ``header`` (cache.json).
    """

    def __init__(self, path: Path, header: dict, table: dict[str, list]):
        self.path = Path(path)
        self.header = header
        self.au_names: list[str] = list(header["au_names"])
        k, size = len(self.au_names), int(header.get("settings", {}).get("crop_size", 96))
        table = _canonical_order(table)
        self.videos: list[str] = list(table["id"])
        self.video_subject: list[str] = [str(s) for s in table["subject"]]
        self.video_counts = np.asarray(table["frames"], dtype=np.int64)
        self.video_rows = np.asarray(table["row"], dtype=np.int64)
        self.checksums: list[str] = list(table["checksum"])
        self.video_offsets = np.concatenate([[0], np.cumsum(self.video_counts)]).astype(np.int64)
        n = int(self.video_offsets[-1])
        missing = missing_videos(self.path, table, k, size)  # a stat per file: every listed video's rows are there
        if missing:
            raise damaged_error(self.path, header, missing)
        rows = int((self.video_rows + self.video_counts).max()) if len(self.videos) else 0
        contiguous = bool(np.array_equal(self.video_rows, self.video_offsets[:-1]))
        position = None if contiguous else _ranges(self.video_rows, self.video_counts)
        maps = {name: _memmap(self.path / file, dtype, shape, rows, random_access=name == "images")
                for name, (file, dtype, shape) in _columns(k, size).items()}
        self.images = PackedImages(maps.pop("images"), n, size, position)
        self._maps, self._position, self._n = maps, position, n
        self.labels = self._column("labels")  # every trainer and evaluation reads all of them
        self.subjects: list[str] = sorted(set(self.video_subject))
        code = {s: i for i, s in enumerate(self.subjects)}
        self.video_subject_code = np.asarray([code[s] for s in self.video_subject], dtype=np.int32)
        splits = header.get("subjects", {})
        # a subject the header does not place (should not happen) is in no split, so no trainer ever uses it
        self.subject_split = [splits.get(s, "none") for s in self.subjects]
        self._split_names = sorted(set(self.subject_split))
        split_code = np.asarray([self._split_names.index(s) for s in self.subject_split], dtype=np.int32)
        self.video_split_code = split_code[self.video_subject_code] if len(self.videos) else np.zeros(0, np.int32)

    def __len__(self) -> int:
        return len(self.images)

    def _column(self, name: str) -> np.ndarray:
        """A per-frame column in frame order: a view of the file where the rows lie in that order, else gathered
        (read only when first used: a large cache opens without reading its per-frame columns)."""
        mm = self._maps[name]
        return mm[:self._n] if self._position is None else np.asarray(mm[self._position])

    @cached_property
    def frame(self) -> np.ndarray:
        return self._column("frame")

    @cached_property
    def key(self) -> np.ndarray:
        return self._column("key")

    @cached_property
    def detected(self) -> np.ndarray:
        return self._column("detected").view(bool)

    @cached_property
    def landmarks(self) -> np.ndarray:
        return self._column("landmarks")

    @cached_property
    def transform(self) -> np.ndarray:
        return self._column("transform")

    @cached_property
    def video_index(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.videos), dtype=np.int32), self.video_counts)

    @cached_property
    def subject_index(self) -> np.ndarray:
        return self.video_subject_code[self.video_index] if len(self.videos) else np.zeros(0, np.int32)

    @cached_property
    def video(self) -> CodedStrings:
        return CodedStrings(lambda: self.video_index, self.videos)

    @cached_property
    def subject(self) -> CodedStrings:
        return CodedStrings(lambda: self.subject_index, self.subjects)

    @cached_property
    def split(self) -> CodedStrings:
        return CodedStrings(lambda: np.repeat(self.video_split_code, self.video_counts), self._split_names)

    @cached_property
    def video_meta(self) -> dict[str, dict]:
        """Each finished video's report (the one written with its current rows), by video id."""
        wanted = dict(zip(self.videos, self.checksums))
        out: dict[str, dict] = {}
        reports = self.path / REPORTS_FILE
        if reports.is_file():
            with open(reports, "rb") as fh:
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        break
                    try:
                        r = json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue  # a damaged line loses that report only
                    if isinstance(r, dict) and wanted.get(r.get("video")) == r.get("checksum"):
                        out[r["video"]] = r
        return {v: out.get(v, {"video": v, "subject": s, "n": int(c)})
                for v, s, c in zip(self.videos, self.video_subject, self.video_counts)}

    def video_rows_of(self, video: str) -> slice:
        """The frame indices of one video (they are contiguous)."""
        i = self.videos.index(video)
        return slice(int(self.video_offsets[i]), int(self.video_offsets[i + 1]))

    def indices(self, split: str) -> np.ndarray:
        """Frame indices of one split (train / val / test), from per-video ranges (no per-frame strings)."""
        if split not in self._split_names:
            return np.zeros(0, dtype=np.int64)
        chosen = self.video_split_code == self._split_names.index(split)
        return _ranges(self.video_offsets[:-1][chosen], self.video_counts[chosen])

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, frames={len(self)}, videos={len(self.videos)}, aus={self.au_names})"


def _canonical_order(table: dict[str, list]) -> dict[str, list]:
    """The header's video listing sorted by video id, every per-video column alike.

    Workers commit videos as they finish, so two builds of the same input pack them in different orders; frame
    indices follow this sorted listing instead, so the same content gives the same frame numbering (the same
    batches for a seed, the same test draws, one ``train_frames.npy``) however it was packed: rows are mapped to
    their place in the files (``position``)."""
    ids = list(table.get("id", []))
    order = sorted(range(len(ids)), key=ids.__getitem__)
    if order == list(range(len(ids))):
        return table
    return {name: [column[i] for i in order] if isinstance(column, list) and len(column) == len(ids) else column
            for name, column in table.items()}


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` for each pair, vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    keep = counts > 0
    starts, counts = np.asarray(starts, dtype=np.int64)[keep], counts[keep]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.ones(total, dtype=np.int64)
    out[first] = starts - np.concatenate([[0], starts[:-1] + counts[:-1] - 1])
    out[0] = starts[0]
    return np.cumsum(out)


def _table_from_entries(entries: dict[str, dict]) -> dict[str, list]:
    return {"id": list(entries), "subject": [e.get("subject") for e in entries.values()],
            "frames": [int(e["n"]) for e in entries.values()], "row": [int(e["row"]) for e in entries.values()],
            "checksum": [e["checksum"] for e in entries.values()]}


def open_cache(path: str | Path) -> Cache:
    """Open a cache written by ``aubench preprocess`` (UsageError with the fix when missing, incompatible, or when
    a listed video's rows are missing from a packed file: checked by size, cheaply; ``verify_cache`` hashes).

    Reads the video listing from ``cache.json`` when the journal is the size the header recorded (a finished
    run), else from the journal itself (a run still going, or one that was interrupted)."""
    path = Path(path)
    header = read_header(path)
    if _pending_compaction(path) is not None:
        raise UsageError(f"cache {path} was being compacted when its writer stopped",
                         "re-run the same 'aubench preprocess' command to finish it (no video is redone)")
    return Cache(path, header, _video_table(path, header)[0])


def cache_identity(cache_or_path: Cache | str | Path) -> str:
    """A hex digest of what a cache holds: its AU names and each finished video's (id, frame count, checksum).

    Independent of where the cache lies and of file times: a copy has the same identity, a video redone or
    relabelled changes it. For a path, remembered in this process while the header and the journal are unchanged
    (a study asks it once per run and seed; opening parses the whole video listing)."""
    if isinstance(cache_or_path, Cache):
        return _identity(cache_or_path)
    path = Path(cache_or_path)
    try:
        key = (str(path.resolve()), *((f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else None
                                      for f in (path / HEADER_FILE, path / JOURNAL_FILE)))
    except OSError:
        key = None
    if key is None or key not in _IDENTITIES:
        value = _identity(open_cache(path))
        if key is None:
            return value
        _IDENTITIES[key] = value
    return _IDENTITIES[key]


_IDENTITIES: dict[tuple, str] = {}


def _identity(cache: Cache) -> str:
    videos = sorted(zip(cache.videos, (int(n) for n in cache.video_counts), cache.checksums))
    payload = json.dumps({"au_names": list(cache.au_names), "videos": videos}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def read_video(cache: Cache, video: str) -> dict[str, np.ndarray]:
    """All per-frame arrays of one video, in memory (a label refresh rewrites them with new labels)."""
    rows = cache.video_rows_of(video)
    return {"images": cache.images[rows], "labels": np.asarray(cache.labels[rows]),
            "frame": np.asarray(cache.frame[rows]), "key": np.asarray(cache.key[rows]),
            "detected": np.asarray(cache.detected[rows]), "landmarks": np.asarray(cache.landmarks[rows]),
            "transform": np.asarray(cache.transform[rows])}


def split_map_digest(header: dict) -> str:
    """A hex digest of the cache's split map (``header["subjects"]``: subject -> split)."""
    subjects = header.get("subjects") or {}
    return hashlib.sha256(json.dumps(sorted(subjects.items())).encode()).hexdigest()[:16]
