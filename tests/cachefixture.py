"""A small cache written straight through the cache writer (no video, no face detection), for trainer tests.

Each AU k, when present, brightens its own 12x12 square of the 96x96 crop (a pattern a CNN learns in a few
dozen steps), on a noisy background; labels have a few unknowns (-1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aubench_cli.data.cache import FORMAT_NAME, FORMAT_VERSION, ShardWriter, now, prepare_cache

AUS = ["AU01", "AU02", "AU04", "AU06", "AU12"]


def make_cache(path: Path, subjects: int = 6, videos_per_subject: int = 2, frames: int = 40, aus: list[str] = AUS,
               seed: int = 0, rates: list[float] | None = None, splits: dict[str, str] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    k = len(aus)
    rates = rates or [0.15 + 0.5 * i / max(1, k - 1) for i in range(k)]
    names = [f"S{i:02d}" for i in range(subjects)]
    if splits is None:
        order = ["val", "test"] + ["train"] * (subjects - 2)
        splits = dict(zip(names, order))
    header = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool_version": "test", "created": now(),
        "source": {"path": "fixture", "layout": "generic"}, "au_names": aus, "settings": {"crop_size": 96},
        "splits": {"source": "fixture"}, "subjects": splits,
    }
    prepare_cache(path, header)
    for s in names:
        for v in range(videos_per_subject):
            writer = ShardWriter(path, f"{s}_v{v}", k)
            labels = (rng.random((frames, k)) < np.array(rates)).astype(np.int8)
            labels[rng.random((frames, k)) < 0.03] = -1
            for f in range(frames):
                img = rng.normal(90, 20, (96, 96))
                for j in range(k):
                    if labels[f, j] == 1:
                        r, c = 10 + 16 * (j // 5), 8 + 16 * (j % 5)
                        img[r:r + 12, c:c + 12] += 70
                crop = np.clip(img, 0, 255).astype(np.uint8)
                writer.add(crop, labels[f], f, np.zeros((4, 2)), np.eye(2, 3), True)
            writer.commit({"video": f"{s}_v{v}", "subject": s, "source": "fixture"})
    return path


def relabel_cache(source: Path, path: Path, aus: list[str], prefix: str | None = None,
                  splits: dict[str, str] | None = None) -> Path:
    """A copy of the cache at ``source`` whose label columns are ``aus`` (picked by name from the source's,
    in that order: another dataset's AU list; a name the source lacks is all unknown), its crops unchanged; ``prefix`` renames every subject and video
    (``S03`` -> ``<prefix>S03``: another dataset's people); ``splits`` maps the (renamed) subjects to splits."""
    from aubench_cli.data.cache import open_cache, read_video

    data = open_cache(source)
    columns = [data.au_names.index(au) if au in data.au_names else -1 for au in aus]
    rename = (lambda name: f"{prefix}{name}") if prefix else (lambda name: name)
    subjects = {rename(s): split for s, split in data.header["subjects"].items()}
    header = {**{k: v for k, v in data.header.items() if k not in ("videos", "journal_bytes", "summary")},
              "au_names": list(aus), "subjects": splits or subjects, "created": now()}
    prepare_cache(path, header)
    for video, subject in zip(data.videos, data.video_subject):
        rows = read_video(data, video)
        writer = ShardWriter(path, rename(video), len(aus))
        labels = np.where(np.asarray(columns) >= 0, rows["labels"][:, columns], -1).astype(np.int8)
        writer.add_block(rows["images"], labels, rows["frame"], rows["key"], rows["detected"],
                         rows["landmarks"], rows["transform"])
        writer.commit({"video": rename(video), "subject": rename(subject), "source": "fixture"})
    return path
