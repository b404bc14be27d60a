"""The cache format: shards written atomically and read back through ``open_cache`` (memory-mapped images,
cheap gathers across shards), temp folders ignored and cleaned, headers versioned and checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aubench_cli.data.cache import (
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_FILE,
    ShardWriter,
    finished_videos,
    open_cache,
    prepare_cache,
    remove_partial_shards,
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


def write_shard(cache, vid: str, subject: str, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    data = {
        "images": rng.integers(0, 256, (n, 96, 96), dtype=np.uint8),
        "labels": rng.integers(-1, 2, (n, 2)).astype(np.int8),
        "frame": np.arange(n) * 2,
        "landmarks": rng.random((n, 4, 2)).astype(np.float32),
        "transform": rng.random((n, 2, 3)).astype(np.float32),
        "detected": rng.random(n) < 0.5,
    }
    w = ShardWriter(cache, vid, len(AUS))
    for i in range(n):
        w.add(*(data[k][i] for k in ("images", "labels", "frame", "landmarks", "transform", "detected")))
    w.commit({"video": vid, "subject": subject, "frames_read": n})
    return data


@pytest.fixture()
def cache(tmp_path):
    path = tmp_path / "cache"
    prepare_cache(path, header())
    a = write_shard(path, "a", "s1", 300, 1)  # more than one write buffer of 256
    b = write_shard(path, "b", "s2", 7, 2)
    c = write_shard(path, "c", "s1", 0, 3)  # a video where no face was found: an empty shard
    return path, [a, b, c]


def test_round_trip(cache):
    path, shards = cache
    c = open_cache(path)
    everything = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
    assert len(c) == 307 and c.images.shape == (307, 96, 96) and c.images.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(c.images), everything["images"])
    np.testing.assert_array_equal(c.labels, everything["labels"])
    np.testing.assert_array_equal(c.frame, everything["frame"])
    np.testing.assert_array_equal(c.landmarks, everything["landmarks"])
    np.testing.assert_array_equal(c.transform, everything["transform"])
    np.testing.assert_array_equal(c.detected, everything["detected"])
    assert c.au_names == AUS and c.labels.dtype == np.int8
    assert c.video.tolist() == ["a"] * 300 + ["b"] * 7
    assert c.subject.tolist() == ["s1"] * 300 + ["s2"] * 7
    assert c.split.tolist() == ["train"] * 300 + ["test"] * 7
    assert c.indices("test").tolist() == list(range(300, 307))


def test_images_are_memory_mapped_and_gathers_cross_shards(cache):
    path, shards = cache
    c = open_cache(path)
    allimg = np.concatenate([s["images"] for s in shards])
    idx = np.random.default_rng(0).integers(0, len(c), 96)
    np.testing.assert_array_equal(c.images[idx], allimg[idx])
    assert isinstance(c.images._map(0), np.memmap)
    np.testing.assert_array_equal(c.images[-1], allimg[-1])
    np.testing.assert_array_equal(c.images[295:302], allimg[295:302])
    mask = np.zeros(len(c), bool)
    mask[[1, 299, 306]] = True
    np.testing.assert_array_equal(c.images[mask], allimg[mask])
    np.testing.assert_array_equal(c.images[[3, 301], 10:20, 5], allimg[[3, 301], 10:20, 5])
    with pytest.raises(IndexError):
        c.images[np.array([307])]
    # the shard files are plain .npy: numpy reads them without aubench
    np.testing.assert_array_equal(np.load(path / "shards" / "b" / "images.npy"), shards[1]["images"])


def test_half_written_shard_is_invisible_and_cleaned(cache):
    path, _ = cache
    w = ShardWriter(path, "d", len(AUS))
    w.add(np.zeros((96, 96), np.uint8), [1, 0], 0, np.zeros((4, 2)), np.zeros((2, 3)), True)
    # no commit: the run was interrupted here
    assert finished_videos(path) == {"a", "b", "c"}
    assert len(open_cache(path)) == 307
    assert remove_partial_shards(path) == [w.tmp.name]
    assert [p.name for p in (path / "shards").iterdir() if p.name.startswith(".")] == []
    w2 = ShardWriter(path, "e", len(AUS))
    w2.abort()
    assert not w2.tmp.exists() and not w2.final.exists()


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


def test_reopening_with_other_settings_is_refused_unless_overwrite(cache):
    path, _ = cache
    done, _ = prepare_cache(path, header())
    assert done == {"a", "b", "c"}
    with pytest.raises(UsageError, match="threshold was 2.0, now 3.0"):
        prepare_cache(path, header(settings={"threshold": 3.0, "crop_size": 96}))
    done, _ = prepare_cache(path, header(settings={"threshold": 3.0, "crop_size": 96}), overwrite=True)
    assert done == set() and len(open_cache(path)) == 0


def test_index_is_used_while_it_matches_and_ignored_once_stale(cache):
    from aubench_cli.data.cache import INDEX_FILE, write_index

    path, shards = cache
    slow = open_cache(path)
    write_index(path)
    fast = open_cache(path)
    for name in ("labels", "frame", "detected", "video_index", "subject_index"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))
    assert fast.videos == slow.videos and fast.video_meta == slow.video_meta
    np.testing.assert_array_equal(fast.images[[0, 305]], slow.images[[0, 305]])
    # a shard added after the index was written: the index no longer matches and is not used
    extra = write_shard(path, "d", "s2", 3, 4)
    c = open_cache(path)
    assert len(c) == 310 and c.videos == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(c.labels[-3:], extra["labels"])
    # a damaged index is ignored too
    (path / INDEX_FILE).write_bytes(b"not a zip")
    assert len(open_cache(path)) == 310
