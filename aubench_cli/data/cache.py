"""The preprocessed-face cache: its on-disk format, the per-video shard writer, and ``open_cache`` to read it.

A cache is a folder::

    cache.json                      versioned header: format, AU names, source, settings, subject splits, summary
    shards/<video id>/images.npy    (n, 96, 96) uint8, uncompressed so it can be memory-mapped
                      labels.npy    (n, K) int8: 1 present, 0 absent, -1 unknown
                      frame.npy     (n,) int32: the frame's 0-based index in its video
                      landmarks.npy (n, 4, 2) float32: eye corners, nose tip, chin in frame pixels
                      transform.npy (n, 2, 3) float32: frame pixels -> crop pixels
                      detected.npy  (n,) bool: found by a full-frame detection (True) or followed (False)
                      meta.json     the video's id, subject, source path and report (written last)
    index.npz                       labels, frame, detected, counts and subjects of all shards in one file
                                    (written at the end of a run; used only while it matches the shards)

Each shard is written into ``shards/.tmp-<id>-<random>/`` and renamed into place when complete, so a shard
either exists whole or not at all: an interrupted run leaves only a temp folder, which the next run deletes
before redoing that video, and a finished video is never redone. ``open_cache`` returns a ``Cache`` whose
``images`` gathers any index array across the shards' memory maps (a random batch of 96 touches at most 96
small reads), so caches larger than memory work. Splits are stored per subject in the header, not in the
shards, so they can never disagree between two videos of one subject.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from aubench_cli import __version__
from aubench_cli.errors import UsageError

FORMAT_NAME = "aubench-cache"
FORMAT_VERSION = 1
HEADER_FILE = "cache.json"
SHARDS_DIR = "shards"
LOCK_FILE = ".lock"
INDEX_FILE = "index.npz"
_TMP_PREFIX = ".tmp-"
_NPY_HEADER_LEN = 128  # fixed, so the image count can be written into the header after streaming the images
_MAX_OPEN_SHARDS = 256  # memory maps kept open at once (each holds a file descriptor)


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
        if path.is_dir() and any(path.iterdir()):
            raise UsageError(
                f"{path} is not an aubench cache (no {HEADER_FILE})", "give the --out folder of 'aubench preprocess'"
            )
        raise UsageError(f"no aubench cache at {path}", f"make one with 'aubench preprocess INPUT --out {path}'")
    try:
        header = json.loads(header_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{header_path} cannot be read: {exc}", f"re-run 'aubench preprocess INPUT --out {path} --overwrite'"
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


# -- writing -----------------------------------------------------------------------------------------------------


def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    """A .npy v1.0 header of exactly ``_NPY_HEADER_LEN`` bytes (padded with spaces, as numpy's own are)."""
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    body_len = _NPY_HEADER_LEN - 10
    text = text.ljust(body_len - 1) + "\n"
    if len(text) != body_len:
        raise ValueError(f"npy header too long for shape {shape}")
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


class ShardWriter:
    """Writes one video's shard into a temp folder; ``commit`` renames it into place, ``abort`` removes it.

    Crops are streamed to ``images.npy`` as they come (a long video need not fit in memory); the small
    per-frame arrays are kept in lists and saved on commit.
    """

    def __init__(self, cache_dir: Path, video_id: str, n_aus: int, size: int = 96):
        self.shards = Path(cache_dir) / SHARDS_DIR
        self.final = self.shards / video_id
        self.tmp = self.shards / f"{_TMP_PREFIX}{video_id}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self.size = size
        self.n_aus = n_aus
        self._images = open(self.tmp / "images.npy", "wb")
        self._images.write(b"\0" * _NPY_HEADER_LEN)
        self._buffer: list[np.ndarray] = []
        self.count = 0
        self.labels: list[np.ndarray] = []
        self.frames: list[int] = []
        self.landmarks: list[np.ndarray] = []
        self.transforms: list[np.ndarray] = []
        self.detected: list[bool] = []

    def add(self, crop: np.ndarray, labels: np.ndarray, frame: int, landmarks: np.ndarray, transform: np.ndarray,
            detected: bool) -> None:
        if crop.shape != (self.size, self.size) or crop.dtype != np.uint8:
            raise ValueError(f"crop must be ({self.size}, {self.size}) uint8, got {crop.shape} {crop.dtype}")
        self._buffer.append(crop)
        if len(self._buffer) >= 256:
            self._flush()
        self.labels.append(np.asarray(labels, dtype=np.int8))
        self.frames.append(int(frame))
        self.landmarks.append(np.asarray(landmarks, dtype=np.float32))
        self.transforms.append(np.asarray(transform, dtype=np.float32))
        self.detected.append(bool(detected))
        self.count += 1

    def _flush(self) -> None:
        if self._buffer:
            self._images.write(np.ascontiguousarray(np.stack(self._buffer)).tobytes())
            self._buffer = []

    def commit(self, meta: dict) -> Path:
        """Finish the files, then make the shard visible in one rename (the moment the video counts as done)."""
        self._flush()
        self._images.seek(0)
        self._images.write(_npy_header((self.count, self.size, self.size), "|u1"))
        self._images.flush()
        os.fsync(self._images.fileno())
        self._images.close()
        n, k = self.count, self.n_aus
        arrays = {
            "labels": np.array(self.labels, dtype=np.int8).reshape(n, k),
            "frame": np.array(self.frames, dtype=np.int32).reshape(n),
            "landmarks": np.array(self.landmarks, dtype=np.float32).reshape(n, 4, 2),
            "transform": np.array(self.transforms, dtype=np.float32).reshape(n, 2, 3),
            "detected": np.array(self.detected, dtype=bool).reshape(n),
        }
        for name, arr in arrays.items():
            with open(self.tmp / f"{name}.npy", "wb") as fh:
                np.save(fh, arr)
                fh.flush()
                os.fsync(fh.fileno())
        _write_json_atomic(self.tmp / "meta.json", {**meta, "n": n, "written": now()})
        _fsync_dir(self.tmp)
        if self.final.exists():  # another run finished it meanwhile: keep the first, drop ours
            shutil.rmtree(self.tmp, ignore_errors=True)
            return self.final
        os.replace(self.tmp, self.final)
        _fsync_dir(self.shards)
        return self.final

    def abort(self) -> None:
        if not self._images.closed:
            self._images.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def finished_videos(cache_dir: Path) -> set[str]:
    """Ids of the videos whose shard is complete (renamed into place with its meta.json)."""
    shards = Path(cache_dir) / SHARDS_DIR
    if not shards.is_dir():
        return set()
    return {p.name for p in shards.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file()}


def remove_partial_shards(cache_dir: Path) -> list[str]:
    """Delete temp folders left by an interrupted run; returns their names (for the report)."""
    shards = Path(cache_dir) / SHARDS_DIR
    removed = []
    if shards.is_dir():
        for p in shards.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CacheLock:
    """One writer at a time: a lock file holding the writer's pid (a stale one, whose process is gone, is taken)."""

    def __init__(self, cache_dir: Path):
        self.path = Path(cache_dir) / LOCK_FILE

    def __enter__(self) -> CacheLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise UsageError(
                        f"another aubench preprocess (pid {pid}) is writing {self.path.parent}",
                        "wait for it to finish, or use another --out",
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise UsageError(f"cannot lock {self.path.parent}", f"remove {self.path} if no aubench is running")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


# Settings whose change makes existing shards wrong: a rerun with other values must start a new cache.
COMPATIBLE_KEYS = ("source", "au_names", "settings")


def prepare_cache(cache_dir: Path, header: dict, overwrite: bool = False) -> tuple[set[str], list[str]]:
    """Create or reopen the cache folder for writing ``header``; returns (finished video ids, removed temp dirs).

    An existing cache made with other settings is refused (its shards would mix two preprocessings) unless
    ``overwrite``; a folder that holds something other than a cache is never deleted.
    """
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise UsageError(f"--out {cache_dir} is a file", "give a folder for the cache")
    if cache_dir.is_dir() and any(p.name != LOCK_FILE for p in cache_dir.iterdir()):
        if not (cache_dir / HEADER_FILE).is_file():
            raise UsageError(f"--out {cache_dir} is a non-empty folder that is not an aubench cache", "choose another --out")
        if overwrite:
            shutil.rmtree(cache_dir / SHARDS_DIR, ignore_errors=True)
            (cache_dir / INDEX_FILE).unlink(missing_ok=True)
            (cache_dir / HEADER_FILE).unlink()
        else:
            old = read_header(cache_dir)
            for key in COMPATIBLE_KEYS:
                if old.get(key) != header.get(key):
                    what = key.replace("_", " ")
                    raise UsageError(
                        f"cache {cache_dir} was made with other {what}: {_diff(old.get(key), header.get(key))}",
                        "pass --overwrite to rebuild it, or choose another --out",
                    )
            header = {**header, "created": old.get("created", header.get("created"))}
    (cache_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    removed = remove_partial_shards(cache_dir)
    _write_json_atomic(cache_dir / HEADER_FILE, header)
    return finished_videos(cache_dir), removed


def _diff(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return "; ".join(f"{k} was {old.get(k)!r}, now {new.get(k)!r}" for k in keys[:3])
    return f"was {old!r}, now {new!r}"


def write_header(cache_dir: Path, header: dict) -> None:
    _write_json_atomic(Path(cache_dir) / HEADER_FILE, header)


# -- reading -----------------------------------------------------------------------------------------------------


class ShardedImages:
    """The crops of every shard as one (N, 96, 96) uint8 array-like, memory-mapped.

    Indexing with an int, a slice, an int array or a boolean mask returns a numpy array; only the requested
    frames are read. Shards are opened lazily and at most ``_MAX_OPEN_SHARDS`` stay mapped.
    """

    def __init__(self, paths: list[Path], counts: list[int], size: int = 96):
        self.paths = list(paths)
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)
        self.size = size
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.offsets[-1]), self.size, self.size)

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        return len(self) * self.size * self.size

    def _map(self, shard: int) -> np.ndarray:
        mm = self._maps.get(shard)
        if mm is None:
            mm = np.load(self.paths[shard], mmap_mode="r")
            self._maps[shard] = mm
            if len(self._maps) > _MAX_OPEN_SHARDS:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(shard)
        return mm

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Crops for an array of global frame indices, in that order."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"frame index out of range for a cache of {n} frames")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((idx.size, self.size, self.size), dtype=np.uint8)
        if idx.size == 0:
            return out
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        local = idx - self.offsets[shard]
        if len(self.paths) == 1:
            return np.asarray(self._map(0)[local])
        order = np.argsort(shard, kind="stable")
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        for group in np.split(order, cuts):
            out[group] = self._map(int(shard[group[0]]))[local[group]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"frame {key} out of range for a cache of {len(self)} frames")
            shard = int(np.searchsorted(self.offsets, i, side="right") - 1)
            out = np.asarray(self._map(shard)[i - self.offsets[shard]])
        else:
            if isinstance(key, slice):
                key = np.arange(len(self))[key]
            key = np.asarray(key)
            if key.dtype == bool:
                if key.shape != (len(self),):
                    raise IndexError(f"boolean index of shape {key.shape} for a cache of {len(self)} frames")
                key = np.flatnonzero(key)
            out = self.gather(key)
        return out[(slice(None),) * (out.ndim - 2) + rest] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.gather(np.arange(len(self)))
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return f"ShardedImages(shape={self.shape}, shards={len(self.paths)})"


class Cache:
    """A preprocessed cache, read-only. Per-frame arrays share one index 0..N-1 across all shards.

    ``images`` (N, 96, 96) uint8 memory-mapped; ``labels`` (N, K) int8; ``au_names``; ``frame`` (N,) int32;
    ``video_index`` / ``videos`` and ``subject_index`` / ``subjects`` (compact codes), with ``video``, ``subject``,
    ``split`` as (N,) str arrays; ``landmarks`` (N, 4, 2) and ``transform`` (N, 2, 3) float32 and ``video_meta``
    (each shard's meta.json) loaded on first use; ``detected`` (N,) bool; ``header`` (cache.json).
    """

    def __init__(self, path: Path, header: dict, videos: list[str], video_subjects: list[str], counts: list[int],
                 labels: np.ndarray, frame: np.ndarray, detected: np.ndarray):
        self.path = Path(path)
        self.header = header
        self.au_names: list[str] = list(header["au_names"])
        self.videos: list[str] = list(videos)
        self.shard_dirs = [self.path / SHARDS_DIR / v for v in self.videos]
        size = int(header.get("settings", {}).get("crop_size", 96))
        self.images = ShardedImages([d / "images.npy" for d in self.shard_dirs], counts, size)
        self.labels = labels.astype(np.int8, copy=False).reshape(len(self.images), len(self.au_names))
        self.frame = frame.astype(np.int32, copy=False)
        self.detected = detected.astype(bool, copy=False)
        self.video_index = np.repeat(np.arange(len(videos), dtype=np.int32), np.asarray(counts, dtype=np.int64))
        self.subjects: list[str] = sorted(set(video_subjects))
        subject_code = {s: i for i, s in enumerate(self.subjects)}
        per_video_subject = np.array([subject_code[s] for s in video_subjects], dtype=np.int32)
        self.subject_index = per_video_subject[self.video_index] if len(videos) else np.zeros(0, np.int32)
        splits = header.get("subjects", {})
        # a subject the header does not place (should not happen) is in no split, so no trainer ever uses it
        self.subject_split = [splits.get(s, "none") for s in self.subjects]

    def _concat(self, name: str, dtype: Any, tail: tuple[int, ...]) -> np.ndarray:
        return _concat_shards(self.shard_dirs, name, dtype, tail)

    @cached_property
    def video_meta(self) -> dict[str, dict]:
        return {v: _read_meta(d) for v, d in zip(self.videos, self.shard_dirs)}

    def __len__(self) -> int:
        return len(self.images)

    @cached_property
    def landmarks(self) -> np.ndarray:
        return self._concat("landmarks", np.float32, (4, 2))

    @cached_property
    def transform(self) -> np.ndarray:
        return self._concat("transform", np.float32, (2, 3))

    @cached_property
    def video(self) -> np.ndarray:
        return np.asarray(self.videos, dtype=str)[self.video_index] if self.videos else np.zeros(0, str)

    @cached_property
    def subject(self) -> np.ndarray:
        return np.asarray(self.subjects, dtype=str)[self.subject_index] if self.subjects else np.zeros(0, str)

    @cached_property
    def split(self) -> np.ndarray:
        return np.asarray(self.subject_split, dtype=str)[self.subject_index] if self.subjects else np.zeros(0, str)

    def indices(self, split: str) -> np.ndarray:
        """Global frame indices of one split (train / val / test)."""
        return np.flatnonzero(self.split == split)

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, frames={len(self)}, videos={len(self.videos)}, aus={self.au_names})"


def _read_meta(shard: Path) -> dict:
    try:
        return json.loads((shard / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"shard {shard} is damaged: {exc}", "delete that folder and re-run 'aubench preprocess'") from None


def _concat_shards(dirs: list[Path], name: str, dtype: Any, tail: tuple[int, ...]) -> np.ndarray:
    parts = [np.load(d / f"{name}.npy") for d in dirs]
    if not parts:
        return np.zeros((0, *tail), dtype=dtype)
    return np.concatenate(parts).astype(dtype, copy=False)


def _shard_stamps(path: Path) -> tuple[list[str], np.ndarray]:
    """Finished shard ids (sorted) and their meta.json modification times: what an index must match."""
    shards = path / SHARDS_DIR
    ids, stamps = [], []
    if shards.is_dir():
        for entry in sorted(os.scandir(shards), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                stamps.append(os.stat(os.path.join(entry.path, "meta.json")).st_mtime_ns)
            except FileNotFoundError:
                continue
            ids.append(entry.name)
    return ids, np.asarray(stamps, dtype=np.int64)


def write_index(path: str | Path) -> None:
    """Gather the per-frame arrays of every shard into ``index.npz`` so that opening a cache of many videos reads
    one file instead of four per shard. Stamped with the shards' meta.json times: stale as soon as one changes."""
    path = Path(path)
    ids, stamps = _shard_stamps(path)
    dirs = [path / SHARDS_DIR / v for v in ids]
    metas = [_read_meta(d) for d in dirs]
    header = read_header(path)
    k = len(header["au_names"])
    arrays = {
        "videos": np.asarray(ids, dtype=str),
        "stamps": stamps,
        "subjects": np.asarray([m["subject"] for m in metas], dtype=str),
        "counts": np.asarray([int(m["n"]) for m in metas], dtype=np.int64),
        "labels": _concat_shards(dirs, "labels", np.int8, (k,)),
        "frame": _concat_shards(dirs, "frame", np.int32, ()),
        "detected": _concat_shards(dirs, "detected", bool, ()),
    }
    tmp = path / f".{INDEX_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path / INDEX_FILE)


def _load_index(path: Path, ids: list[str], stamps: np.ndarray) -> dict | None:
    try:
        with np.load(path / INDEX_FILE, allow_pickle=False) as z:
            if z["videos"].tolist() != ids or not np.array_equal(z["stamps"], stamps):
                return None
            return {k: z[k] for k in z.files}
    except (OSError, KeyError, ValueError):
        return None


def open_cache(path: str | Path) -> Cache:
    """Open a cache written by ``aubench preprocess`` (UsageError with the fix when missing or incompatible).

    Uses ``index.npz`` when it matches the shards exactly, else reads the shards one by one."""
    path = Path(path)
    header = read_header(path)
    ids, stamps = _shard_stamps(path)
    index = _load_index(path, ids, stamps) if (path / INDEX_FILE).is_file() else None
    if index is not None:
        return Cache(path, header, ids, index["subjects"].tolist(), index["counts"].tolist(), index["labels"],
                     index["frame"], index["detected"])
    dirs = [path / SHARDS_DIR / v for v in ids]
    metas = [_read_meta(d) for d in dirs]
    k = len(header["au_names"])
    cache = Cache(path, header, ids, [m["subject"] for m in metas], [int(m["n"]) for m in metas],
                  _concat_shards(dirs, "labels", np.int8, (k,)), _concat_shards(dirs, "frame", np.int32, ()),
                  _concat_shards(dirs, "detected", bool, ()))
    cache.__dict__["video_meta"] = dict(zip(ids, metas))  # already read: spare the cached_property a second pass
    return cache


# -- identity ----------------------------------------------------------------------------------------------------

_IDENTITY_MEMO: dict[tuple, str] = {}


def cache_identity(cache_or_path: Cache | str | Path) -> str:
    """A hex digest of a cache's content: its AU names and, for each finished video (sorted by id), the id, the
    frame count and a SHA-256 of its labels and image bytes. Never its path or file times: a cache moved or copied
    keeps its identity, two caches of the same layout but other frames or labels get different ones. (The split
    map is digested separately, from ``header["subjects"]``.) Remembered within a process while the shards'
    files are unchanged, since hashing reads every image once (about 1.8 GB/s)."""
    path = Path(cache_or_path.path if isinstance(cache_or_path, Cache) else cache_or_path)
    header = cache_or_path.header if isinstance(cache_or_path, Cache) else read_header(path)
    ids, stamps = _shard_stamps(path)
    files = [path / SHARDS_DIR / v / name for v in ids for name in ("images.npy", "labels.npy")]
    key = (str(path.resolve()), tuple(ids), tuple(stamps.tolist()),
           tuple((os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files))
    if key in _IDENTITY_MEMO:
        return _IDENTITY_MEMO[key]
    import hashlib

    digest = hashlib.sha256(json.dumps({"au_names": list(header["au_names"])}).encode())
    for video in ids:
        shard = path / SHARDS_DIR / video
        labels = np.ascontiguousarray(np.load(shard / "labels.npy"))
        images = np.load(shard / "images.npy", mmap_mode="r")
        content = hashlib.sha256(labels.tobytes())
        for start in range(0, len(images), 1024):
            content.update(np.ascontiguousarray(images[start:start + 1024]).tobytes())
        digest.update(f"{video}\0{len(images)}\0{content.hexdigest()}\0".encode())
    _IDENTITY_MEMO[key] = digest.hexdigest()[:32]
    return _IDENTITY_MEMO[key]


def split_map_digest(header: dict) -> str:
    """A hex digest of the cache's split map (``header["subjects"]``: subject -> split)."""
    import hashlib

    subjects = header.get("subjects") or {}
    return hashlib.sha256(json.dumps(sorted(subjects.items())).encode()).hexdigest()[:16]
