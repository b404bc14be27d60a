"""The cache format: videos appended to packed files and journaled atomically, read back through ``open_cache``
(memory-mapped arrays, one fancy index per batch), a writer killed mid-append leaving nothing visible, dead rows
compacted, the header's video listing, ``cache_identity``, and the writer lock."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aubench_cli.data.cache import (
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_FILE,
    JOURNAL_FILE,
    CacheLock,
    VideoWriter,
    cache_identity,
    consolidate,
    finished_videos,
    open_cache,
    prepare_cache,
    remove_partial_shards,
    remove_video,
)
from aubench_cli.errors import UsageError

AUS = ["AU01", "AU12"]


def header(**over) -> dict:
    h = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool_version": "test", "created": "now",
        "source": {"path": "/data", "layout": "generic"}, "au_names": AUS, "settings": {"threshold": 2.0, "crop_size": 96},
        "subjects": {"s1": "train", "s2": "test"},
    }
    h.update(over)
    return h


def video_data(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, (n, 96, 96), dtype=np.uint8),
        "labels": rng.integers(-1, 2, (n, 2)).astype(np.int8),
        "frame": np.arange(n) * 2,
        "landmarks": rng.random((n, 4, 2)).astype(np.float32),
        "transform": rng.random((n, 2, 3)).astype(np.float32),
        "detected": rng.random(n) < 0.5,
    }


def write_video(cache, vid: str, subject: str, n: int, seed: int) -> dict:
    data = video_data(n, seed)
    w = VideoWriter(cache, vid, len(AUS))
    for i in range(n):
        w.add(*(data[k][i] for k in ("images", "labels", "frame", "landmarks", "transform", "detected")))
    w.commit({"video": vid, "subject": subject, "frames_read": n})
    return data


@pytest.fixture()
def cache(tmp_path):
    path = tmp_path / "cache"
    prepare_cache(path, header())
    a = write_video(path, "a", "s1", 300, 1)  # more than one write buffer of 256
    b = write_video(path, "b", "s2", 7, 2)
    c = write_video(path, "c", "s1", 0, 3)  # a video where no face was found: no rows
    return path, [a, b, c]


def _mapped(arr) -> bool:
    """Is this array a view of a memory map (not a copy in RAM)?"""
    while arr is not None:
        if isinstance(arr, np.memmap) or type(arr).__name__ == "mmap":
            return True
        arr = getattr(arr, "base", None)
    return False


def test_round_trip(cache):
    path, videos = cache
    c = open_cache(path)
    everything = {k: np.concatenate([s[k] for s in videos]) for k in videos[0]}
    assert len(c) == 307 and c.images.shape == (307, 96, 96) and c.images.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(c.images), everything["images"])
    np.testing.assert_array_equal(c.labels, everything["labels"])
    np.testing.assert_array_equal(c.frame, everything["frame"])
    np.testing.assert_array_equal(c.key, everything["frame"])  # the label key defaults to the frame index
    np.testing.assert_array_equal(c.landmarks, everything["landmarks"])
    np.testing.assert_array_equal(c.transform, everything["transform"])
    np.testing.assert_array_equal(c.detected, everything["detected"])
    assert c.au_names == AUS and c.labels.dtype == np.int8 and c.detected.dtype == bool
    assert c.videos == ["a", "b", "c"] and c.video_counts.tolist() == [300, 7, 0]
    assert c.video.tolist() == ["a"] * 300 + ["b"] * 7
    assert c.subject.tolist() == ["s1"] * 300 + ["s2"] * 7
    assert c.split.tolist() == ["train"] * 300 + ["test"] * 7
    assert c.indices("test").tolist() == list(range(300, 307)) and len(c.indices("val")) == 0
    assert c.video_meta["b"]["frames_read"] == 7 and c.video_meta["c"]["n"] == 0


def test_arrays_are_memory_mapped_and_strings_are_codes(cache):
    path, videos = cache
    c = open_cache(path)
    allimg = np.concatenate([s["images"] for s in videos])
    for arr in (c.images._mm, c.labels, c.frame, c.detected, c.landmarks, c.transform):
        assert _mapped(arr)
    idx = np.random.default_rng(0).integers(0, len(c), 96)
    np.testing.assert_array_equal(c.images[idx], allimg[idx])
    np.testing.assert_array_equal(c.images[-1], allimg[-1])
    np.testing.assert_array_equal(c.images[295:302], allimg[295:302])
    mask = np.zeros(len(c), bool)
    mask[[1, 299, 306]] = True
    np.testing.assert_array_equal(c.images[mask], allimg[mask])
    np.testing.assert_array_equal(c.images[[3, 301], 10:20, 5], allimg[[3, 301], 10:20, 5])
    with pytest.raises(IndexError):
        c.images[np.array([307])]
    # video / subject / split compare and index like str arrays, from int codes into per-video tables
    assert (c.video == "b").sum() == 7 and (c.video == "nope").sum() == 0 and (c.video != "a").sum() == 7
    assert c.video[299] == "a" and c.video[[0, 306]].tolist() == ["a", "b"]
    assert np.asarray(c.subject).dtype.kind == "U" and c.subject.codes.dtype == np.int32
    # the packed files are plain bytes: numpy reads them without aubench
    raw = np.fromfile(path / "images.u8", dtype=np.uint8).reshape(-1, 96, 96)
    np.testing.assert_array_equal(raw[300:307], videos[1]["images"])


def test_half_written_video_is_invisible_and_cleaned(cache):
    path, _ = cache
    w = VideoWriter(path, "d", len(AUS))
    w.add(np.zeros((96, 96), np.uint8), [1, 0], 0, np.zeros((4, 2)), np.zeros((2, 3)), True)
    # no commit: the run was interrupted here
    assert finished_videos(path) == {"a", "b", "c"}
    assert len(open_cache(path)) == 307
    assert remove_partial_shards(path) == [w.tmp.name]
    assert list((path / "staging").iterdir()) == []
    w2 = VideoWriter(path, "e", len(AUS))
    w2.abort()
    assert not w2.tmp.exists() and finished_videos(path) == {"a", "b", "c"}


KILL_IN_COMMIT = """
import os, sys, time
import numpy as np
import aubench_cli.data.cache as cache_mod
from aubench_cli.data.cache import VideoWriter

path, marker = sys.argv[1], sys.argv[2]
real_append = cache_mod._append_line

def append_then_stall(target, entry, *rest):
    if target.name == cache_mod.JOURNAL_FILE:  # the rows and the report are written: stop before the journal line
        with open(marker, "w") as fh:
            fh.write("ready")
        time.sleep(600)
    real_append(target, entry, *rest)

cache_mod._append_line = append_then_stall
w = VideoWriter(path, "d", 2)
for i in range(50):
    w.add(np.full((96, 96), 200, np.uint8), [1, 1], i, np.zeros((4, 2)), np.zeros((2, 3)), True)
w.commit({"video": "d", "subject": "s2"})
"""


def test_writer_killed_mid_commit_leaves_nothing_visible(cache):
    path, videos = cache
    marker = path.parent / "stalled"
    child = subprocess.Popen([sys.executable, "-c", KILL_IN_COMMIT, str(path), str(marker)],
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 120
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the child never reached its journal line"
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    assert (path / "images.u8").stat().st_size == (307 + 50) * 96 * 96  # its rows reached the packed file...
    c = open_cache(path)
    assert len(c) == 307 and c.videos == ["a", "b", "c"]  # ...but are not part of the cache
    # another writer (a second worker of the same run) commits where the committed rows end, over the dead rows
    e = write_video(path, "e", "s2", 5, 9)
    c = open_cache(path)
    assert c.videos == ["a", "b", "c", "e"] and len(c) == 312
    np.testing.assert_array_equal(c.images[307:], e["images"])
    np.testing.assert_array_equal(c.labels[307:], e["labels"])
    np.testing.assert_array_equal(c.images[:300], videos[0]["images"])
    # the next run cuts off what is left of the dead tail
    prepare_cache(path, header())
    assert (path / "images.u8").stat().st_size == 312 * 96 * 96 and (path / "labels.i8").stat().st_size == 312 * 2
    np.testing.assert_array_equal(open_cache(path).images[307:], e["images"])


def test_superseded_rows_are_dead_until_consolidated(cache):
    path, videos = cache
    identity = cache_identity(path)
    remove_video(path, "a")
    c = open_cache(path)
    assert c.videos == ["b", "c"] and len(c) == 7
    np.testing.assert_array_equal(c.images[:], videos[1]["images"])  # read through the row map
    np.testing.assert_array_equal(c.labels, videos[1]["labels"])
    again = write_video(path, "a", "s1", 4, 11)  # redone: appended after the dead rows
    c = open_cache(path)
    # frames follow the listing sorted by id (a, b, c), the rows stay where they were written (a after the dead rows)
    assert c.videos == ["a", "b", "c"] and c.video_rows.tolist() == [307, 300, 307]
    np.testing.assert_array_equal(c.images[:4], again["images"])
    np.testing.assert_array_equal(c.images[4:], videos[1]["images"])
    before = cache_identity(c)
    assert before != identity
    consolidate(path)
    assert (path / "images.u8").stat().st_size == 11 * 96 * 96  # the 300 dead rows are gone
    c = open_cache(path)
    assert c.video_rows.tolist() == [7, 0, 7] and cache_identity(c) == before  # same content, same identity
    np.testing.assert_array_equal(c.images[:4], again["images"])
    np.testing.assert_array_equal(c.images[4:], videos[1]["images"])
    np.testing.assert_array_equal(c.labels[:4], again["labels"])


def test_header_lists_every_video_with_rows_and_checksums(cache):
    path, videos = cache
    consolidate(path)
    h = json.loads((path / HEADER_FILE).read_text())
    listing = h["videos"]
    assert listing["id"] == ["a", "b", "c"] and listing["frames"] == [300, 7, 0]
    assert listing["image_bytes"] == [[0, 300 * 9216], [300 * 9216, 307 * 9216], [307 * 9216, 307 * 9216]]
    assert h["journal_bytes"] == (path / JOURNAL_FILE).stat().st_size
    # a checksum is recomputable from the files alone: what tells a damaged video from an intact one
    sizes = {"images.u8": 9216, "labels.i8": 2, "frame.i32": 4, "key.i32": 4, "detected.u8": 1,
             "landmarks.f32": 32, "transform.f32": 24}

    def checksum(i: int) -> str:
        hsh = hashlib.blake2b(digest_size=16)
        r, n = listing["row"][i], listing["frames"][i]
        for name, size in sizes.items():
            with open(path / name, "rb") as fh:
                fh.seek(r * size)
                hsh.update(fh.read(n * size))
        return hsh.hexdigest()

    assert [checksum(i) for i in range(3)] == listing["checksum"]
    with open(path / "labels.i8", "r+b") as fh:  # one flipped label byte in video b
        fh.seek(300 * 2 + 5)
        fh.write(b"\x07")
    assert checksum(1) != listing["checksum"][1] and checksum(0) == listing["checksum"][0]
    # the listing is used while the journal is as long as the header says; after a new commit, the journal is read
    write_video(path, "d", "s2", 2, 5)
    assert open_cache(path).videos == ["a", "b", "c", "d"]


def test_cache_identity_ignores_path_and_times_and_sees_content(cache, tmp_path):
    path, _ = cache
    consolidate(path)
    first = cache_identity(path)
    assert len(first) == 64 and int(first, 16) >= 0
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(path, copy)
    for f in copy.iterdir():
        os.utime(f, (1e9, 1e9))
    assert cache_identity(copy) == first == cache_identity(open_cache(path))
    write_video(copy, "b", "s2", 7, 99)  # video b redone with other content
    assert cache_identity(copy) != first


def test_missing_and_incompatible_caches_are_usage_errors(tmp_path, cache):
    with pytest.raises(UsageError, match="no aubench cache") as info:
        open_cache(tmp_path / "nothing")
    assert "aubench preprocess" in info.value.hint
    path, _ = cache
    h = json.loads((path / HEADER_FILE).read_text())
    h["format_version"] = FORMAT_VERSION + 1
    (path / HEADER_FILE).write_text(json.dumps(h))
    with pytest.raises(UsageError, match="format version") as info:
        open_cache(path)
    assert "--overwrite" in info.value.hint
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="not an aubench cache"):
        open_cache(tmp_path / "other")
    with pytest.raises(UsageError, match="not an aubench cache"):
        prepare_cache(tmp_path / "other", header())


def test_truncated_packed_file_is_reported_as_damage(cache):
    path, _ = cache
    os.truncate(path / "labels.i8", 100)
    with pytest.raises(UsageError, match="damaged"):
        open_cache(path)


def test_reopening_with_other_settings_is_refused_unless_overwrite(cache):
    path, _ = cache
    done, _ = prepare_cache(path, header())
    assert done == {"a", "b", "c"}
    with pytest.raises(UsageError, match="threshold was 2.0, now 3.0"):
        prepare_cache(path, header(settings={"threshold": 3.0, "crop_size": 96}))
    done, _ = prepare_cache(path, header(settings={"threshold": 3.0, "crop_size": 96}), overwrite=True)
    assert done == set() and len(open_cache(path)) == 0


def test_overwrite_after_a_compaction_killed_past_its_marker_keeps_nothing_old(cache, monkeypatch):
    # a run killed after the compaction's COMPLETE marker, before its renames: the marked folder holds the old
    # cache's whole journal and rows, which the next writer would roll forward
    import aubench_cli.data.cache as cache_module

    path, _ = cache
    remove_video(path, "a")  # dead rows, so consolidate compacts

    def killed(cache_dir):
        raise KeyboardInterrupt  # stands for the kill: the renames never happen

    monkeypatch.setattr(cache_module, "_finish_compaction", killed)
    with pytest.raises(KeyboardInterrupt):
        consolidate(path)
    monkeypatch.undo()
    assert [p for p in path.glob(".compact-*") if (p / "COMPLETE").is_file()]  # the state the issue reproduced
    new = header(settings={"threshold": 3.0, "crop_size": 96})
    done, _ = prepare_cache(path, new, overwrite=True)
    assert done == set() and not list(path.glob(".compact-*"))
    assert len(open_cache(path)) == 0 and open_cache(path).videos == []
    write_video(path, "d", "s2", 5, 9)  # the rebuild's own video is all there is
    consolidate(path)
    c = open_cache(path)
    assert c.videos == ["d"] and len(c) == 5 and c.header["settings"]["threshold"] == 3.0


HOLD_LOCK = """
import sys, time
from aubench_cli.data.cache import CacheLock
with CacheLock(sys.argv[1]):
    open(sys.argv[2], "w").write("held")
    time.sleep(600)
"""


def test_lock_refuses_a_second_writer_and_cannot_be_stolen_through_a_stale_pid(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / ".lock").write_text(str(dead.pid))  # a stale lock from a process that is gone: taken over
    with CacheLock(folder):
        pass
    marker = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), str(marker)],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(UsageError, match=f"pid {holder.pid}"):
            CacheLock(folder).__enter__()
        # the race: a second taker read a dead pid from the file (written by a third) while the holder is alive
        (folder / ".lock").write_text(str(dead.pid))
        with pytest.raises(UsageError, match="another aubench preprocess"):
            CacheLock(folder).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    with CacheLock(folder):  # its holder killed: the kernel dropped the lock
        pass


def test_frames_are_numbered_the_same_however_the_videos_were_packed(tmp_path):
    # Workers commit videos as they finish: two builds of one input pack them in different orders. Frame indices
    # follow the listing sorted by id, so every frame (and so every batch a seed draws) is the same in both.
    specs = {"a": ("s1", 5, 1), "b": ("s2", 7, 2), "c": ("s1", 3, 3), "d": ("s2", 4, 4)}
    opened = []
    for name, order in (("in-order", "abcd"), ("shuffled", "dbca")):
        path = tmp_path / name
        prepare_cache(path, header())
        for vid in order:
            write_video(path, vid, *specs[vid])
        opened.append(open_cache(path))
    one, two = opened
    assert one.videos == two.videos == ["a", "b", "c", "d"] and one.video_rows.tolist() != two.video_rows.tolist()
    assert cache_identity(one) == cache_identity(two)
    np.testing.assert_array_equal(np.asarray(one.images), np.asarray(two.images))
    for column in ("labels", "frame", "key", "detected", "landmarks", "transform"):
        np.testing.assert_array_equal(getattr(one, column), getattr(two, column), err_msg=column)
    for split in ("train", "test"):
        np.testing.assert_array_equal(one.indices(split), two.indices(split))
    idx = np.array([13, 0, 18, 5])
    np.testing.assert_array_equal(one.images.gather(idx), two.images.gather(idx))
    np.testing.assert_array_equal(np.asarray(one.subject)[idx], np.asarray(two.subject)[idx])
