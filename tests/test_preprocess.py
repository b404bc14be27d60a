"""``aubench preprocess`` end to end on tiny hand-made datasets: labels matched to frames without shifting,
mismatches and missing labels reported, a corrupt video skipped with a non-zero exit, resume after an
interruption, subject-exclusive splits, and the CLI's usage errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

from aubench_cli.data.align import CROP_PIPELINE_VERSION
from aubench_cli.data.cache import open_cache
from aubench_cli.cli import app
from aubench_cli.errors import UsageError
from aubench_cli.data.labels import list_dataset
from aubench_cli.data.preprocess import PreprocessOptions, assign_splits, run_preprocess, split_subjects

runner = CliRunner()
N_FRAMES = 8


def face_frames(n: int, seed: int, size=(640, 480)) -> list[np.ndarray]:
    """The astronaut photo, gently turning and moving across ``n`` frames."""
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(seed)
    base_angle, base_scale = rng.uniform(-10, 10), rng.uniform(0.8, 1.1)
    frames = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((224.0, 130.0), base_angle + 1.5 * i, base_scale)
        m[:, 2] += np.array([size[0] / 2 - 224 + 2 * i, size[1] / 2 - 130])
        frames.append(cv2.warpAffine(photo, m, size, borderMode=cv2.BORDER_REPLICATE))
    return frames


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()


def label_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    rows = rng.integers(0, 2, (n, 2))
    rows[rng.random((n, 2)) < 0.15] = -1
    return rows


def write_labels(path: Path, frames: list[int], rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["frame,AU01,AU12"] + [f"{f},{'' if a < 0 else a},{b}" for f, (a, b) in zip(frames, rows)]
    path.write_text("\n".join(lines) + "\n")


def make_dataset(root: Path, subjects=("s1", "s2", "s3", "s4")) -> dict:
    """A generic-layout dataset: one video per subject, with its labels; returns the expected labels."""
    manifest = ["video,subject"]
    expected = {}
    for i, subject in enumerate(subjects):
        name = f"{subject}_v1"
        write_video(root / "videos" / f"{name}.avi", face_frames(N_FRAMES, i))
        rows = label_rows(N_FRAMES, i)
        write_labels(root / "labels" / f"{name}.csv", list(range(N_FRAMES)), rows)
        manifest.append(f"videos/{name}.avi,{subject}")
        expected[f"videos__{name}"] = rows
    (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    return expected


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("data") / "generic"
    return root, make_dataset(root)


def test_end_to_end_labels_match_frames(dataset, tmp_path):
    root, expected = dataset
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    cache = open_cache(tmp_path / "cache")
    assert summary["failures"] == [] and summary["faces_found"] == len(cache) == 4 * N_FRAMES
    assert summary["faces_found_pct"] == 100.0
    assert cache.au_names == ["AU01", "AU12"]
    for vid, rows in expected.items():
        sel = cache.video == vid
        np.testing.assert_array_equal(cache.frame[sel], np.arange(N_FRAMES))
        np.testing.assert_array_equal(cache.labels[sel], rows)
    # crops are aligned: the landmarks land on the template in crop coordinates
    from aubench_cli.data.align import TEMPLATE, apply_transform

    pts = np.stack([apply_transform(t, lm) for t, lm in zip(cache.transform, cache.landmarks)])
    assert np.abs(pts - TEMPLATE).max() < 3.0
    assert cache.detected.sum() == 4  # one detection per video, the rest followed
    header = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert header["status"] == "complete" and header["source"]["layout"] == "generic"
    # positive rates per split match the labels
    train = cache.indices("train")
    rate = summary["splits"]["train"]["positive_rate"]["AU12"]
    col = cache.labels[train, 1]
    assert rate == pytest.approx((col == 1).sum() / (col >= 0).sum(), abs=1e-4)


def test_mismatched_labels_are_reported_never_shifted(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    rows_long = label_rows(N_FRAMES + 3, 7)
    write_labels(root / "labels" / "s1_v1.csv", list(range(N_FRAMES + 3)), rows_long)  # 3 labels past the end
    rows_gap = label_rows(N_FRAMES, 8)
    kept = [f for f in range(N_FRAMES) if f not in (2, 3)]
    write_labels(root / "labels" / "s2_v1.csv", kept, rows_gap[kept])  # frames 2 and 3 unlabelled
    (root / "labels" / "s3_v1.csv").unlink()  # no label file at all
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    cache = open_cache(tmp_path / "cache")
    issues = {m["video"]: " | ".join(m["issues"]) for m in summary["mismatches"]}
    assert "3 label rows have no frame (frames 8-10" in issues["videos__s1_v1"]
    assert "2 frames have no label row (frames 2-3 in s2_v1.csv)" in issues["videos__s2_v1"]
    assert summary["skipped"] == [{"video": "videos__s3_v1", "reason": "no label file labels/s3_v1.csv"}]
    s1 = cache.video == "videos__s1_v1"
    np.testing.assert_array_equal(cache.labels[s1], rows_long[:N_FRAMES])
    s2 = cache.video == "videos__s2_v1"
    np.testing.assert_array_equal(cache.frame[s2], kept)
    np.testing.assert_array_equal(cache.labels[s2], rows_gap[kept])
    assert summary["failures"] == []


def test_frames_without_a_face_are_counted_not_written(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    frames = face_frames(N_FRAMES, 0)
    for i in (3, 4):
        frames[i] = np.full_like(frames[i], 90)
    write_video(root / "videos" / "s1_v1.avi", frames)
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    meta = open_cache(tmp_path / "cache").video_meta["videos__s1_v1"]
    assert meta["no_face"] == 2 and meta["faces"] == N_FRAMES - 2 and meta["n"] == N_FRAMES - 2
    assert summary["faces_found"] == 3 * N_FRAMES - 2


def test_bp4d_frame_folder_matched_by_frame_number(tmp_path):
    root = tmp_path / "bp4d"
    frames = face_frames(6, 1)
    numbers = [1, 2, 3, 5, 6, 7]  # image 4 is missing from the folder
    folder = root / "2DFaces" / "F001" / "T1"
    folder.mkdir(parents=True)
    for n, f in zip(numbers, frames):
        cv2.imwrite(str(folder / f"{n:04d}.jpg"), f)
    rows = [[n, n % 2, 9 if n == 6 else (n + 1) % 2] for n in range(1, 8)]
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True)
    (occ / "F001_T1.csv").write_text("frame,1,12\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    cache = open_cache(tmp_path / "cache")
    assert summary["layout"] == "bp4d" and len(cache) == 6
    want = {n: [n % 2, -1 if n == 6 else (n + 1) % 2] for n in numbers}
    np.testing.assert_array_equal(cache.labels, [want[n] for n in numbers])  # no shift after the gap
    np.testing.assert_array_equal(cache.frame, numbers)  # the image's own frame number, not its position
    assert "frame numbers 4 of F001_T1.csv" in " ".join(summary["mismatches"][0]["issues"])


KILL_MID_VIDEO = """
import os, sys, time
from pathlib import Path
from aubench_cli.data.preprocess import PreprocessOptions, run_preprocess

marker = Path(sys.argv[3])
seen = []

def progress(event):
    if event.get("event") == "video":
        seen.append(event["video"])
    if event.get("event") == "frames" and len(seen) == 1:  # the second video's frames are aligned, not committed
        marker.write_text(str(os.getpid()))
        time.sleep(600)

run_preprocess(sys.argv[1], sys.argv[2], PreprocessOptions(workers=1), progress=progress)
"""


def _kill_mid_video(root: Path, out: Path, tmp_path: Path) -> None:
    """Run preprocess in a child process and SIGKILL it while its second video is half-written."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "killed-here"
    child = subprocess.Popen([sys.executable, "-c", KILL_MID_VIDEO, str(root), str(out), str(marker)],
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 300
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the child never reached its second video"
    child.send_signal(signal.SIGKILL)
    assert child.wait(60) == -signal.SIGKILL


def test_killed_writer_leaves_no_partial_video_and_resumes(dataset, tmp_path):
    root, expected = dataset
    out = tmp_path / "cache"
    _kill_mid_video(root, out, tmp_path)
    staged = [p.name for p in (out / "staging").iterdir()]
    assert len(staged) == 1 and staged[0].startswith(".tmp-")  # the half-written video, in staging only
    cache = open_cache(out)
    assert len(cache.videos) == 1  # the finished first video is there, whole; the second is not visible at all
    first = cache.videos[0]
    assert len(cache) == N_FRAMES and set(cache.video.tolist()) == {first}
    np.testing.assert_array_equal(cache.labels, expected[first])
    first_crops = cache.images[:]
    summary = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert summary["videos"]["processed_now"] == 3 and summary["videos"]["already_done"] == 1
    assert summary["partial_shards_removed"] == staged and list((out / "staging").iterdir()) == []
    cache = open_cache(out)
    assert len(cache) == 4 * N_FRAMES and sorted(cache.videos) == sorted(expected)
    np.testing.assert_array_equal(cache.images[cache.video_rows_of(first)], first_crops)  # not redone
    for vid, rows in expected.items():
        np.testing.assert_array_equal(cache.labels[cache.video == vid], rows)
    assert len(set(zip(cache.video.tolist(), cache.frame.tolist()))) == len(cache)  # no duplicates
    again = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert again["videos"]["processed_now"] == 0 and again["videos"]["already_done"] == 4
    assert again["notes"] == [] or all("split" in n for n in again["notes"])


def test_corrupt_video_among_good_ones_with_two_workers(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    (root / "videos" / "s2_v1.avi").write_bytes(b"RIFF\x00\x00this is not a video" * 50)
    out = tmp_path / "cache"
    result = runner.invoke(app, ["preprocess", str(root), "--out", str(out), "--workers", "2", "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert [f["video"] for f in summary["failures"]] == ["videos__s2_v1"]
    assert "cannot open" in summary["failures"][0]["reason"] or "decoded" in summary["failures"][0]["reason"]
    cache = open_cache(out)
    assert sorted(cache.videos) == ["videos__s1_v1", "videos__s3_v1"] and len(cache) == 2 * N_FRAMES
    assert json.loads((out / "cache.json").read_text())["status"].startswith("incomplete")


def test_splits_are_one_per_subject_and_seeded():
    subjects = [f"s{i}" for i in range(20)]
    a = split_subjects(subjects * 3, seed=1)  # several videos per subject: one split per subject
    assert set(a) == set(subjects) and a == split_subjects(subjects, seed=1)
    assert a != split_subjects(subjects, seed=2)
    assert sorted(set(a.values())) == ["test", "train", "val"]


def test_manifest_splits_are_used_and_checked(tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    for name in ("a", "b", "c"):
        (root / f"{name}.avi").write_bytes(b"x")
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{name}.csv").write_text("frame,AU01\n0,1\n")
    (root / "manifest.csv").write_text("video,subject,split\na.avi,p1,train\nb.avi,p2,test\nc.avi,p1,train\n")
    splits, source = assign_splits(list_dataset(root), (0.74, 0.11, 0.15), 0)
    assert splits == {"p1": "train", "p2": "test"} and source == "manifest"
    (root / "manifest.csv").write_text("video,subject,split\na.avi,p1,train\nb.avi,p2,test\nc.avi,p1,val\n")
    with pytest.raises(UsageError, match="both train and val"):
        assign_splits(list_dataset(root), (0.74, 0.11, 0.15), 0)


def test_cache_splits_never_share_a_subject(dataset, tmp_path):
    root, _ = dataset
    run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1, split_seed=18))  # one with all 3 splits
    cache = open_cache(tmp_path / "cache")
    owners = {}
    for subject, split in zip(cache.subject.tolist(), cache.split.tolist()):
        assert owners.setdefault(subject, split) == split
    assert set(owners.values()) == {"train", "val", "test"}


def test_cli_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["preprocess", str(tmp_path / "empty"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "empty" in result.output
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("hello\n")
    result = runner.invoke(app, ["preprocess", str(tmp_path / "odd"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "no layout" in result.output
    result = runner.invoke(app, ["preprocess", str(tmp_path / "odd"), "--format", "dsifa"])
    assert result.exit_code == 2 and "disfa" in result.output
    result = runner.invoke(app, ["preprocess", str(tmp_path / "odd"), "--splits", "0.5,0.5"])
    assert result.exit_code == 2 and "--splits" in result.output
    assert not (tmp_path / "c").exists()  # nothing written before the error


def test_rerun_with_other_threshold_is_refused(dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "cache"
    run_preprocess(root, out, PreprocessOptions(workers=1))
    with pytest.raises(UsageError, match="threshold"):
        run_preprocess(root, out, PreprocessOptions(workers=1, threshold=3))


def test_affwild2_frame_folder_with_gap_keeps_rows_in_place(tmp_path):
    root = tmp_path / "aff"
    frames = face_frames(5, 2)
    folder = root / "cropped" / "vid1"
    folder.mkdir(parents=True)
    numbers = [1, 2, 4, 5, 6]  # 00003.jpg missing: ABAW drops frames its own cropping found no face in
    for n, f in zip(numbers, frames):
        cv2.imwrite(str(folder / f"{n:05d}.jpg"), f)
    rows = [[i % 2, (i // 2) % 2, -1 if i == 4 else 1] for i in range(6)]
    (root / "annotations").mkdir()
    (root / "annotations" / "vid1.txt").write_text("AU1,AU2,AU4\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    cache = open_cache(tmp_path / "cache")
    assert summary["layout"] == "affwild2"
    np.testing.assert_array_equal(cache.labels, [rows[n - 1] for n in numbers])  # row i <-> image i+1
    np.testing.assert_array_equal(cache.frame, [n - 1 for n in numbers])  # the frame's own index, not its position
    assert "1 label rows have no frame (rows 2 (lines 4) of vid1.txt" in " ".join(summary["mismatches"][0]["issues"])


def test_generic_frame_folder_with_gap_fails_instead_of_shifting(tmp_path):
    root = tmp_path / "g"
    for name, numbers in (("a", [0, 1, 2]), ("b", [0, 1, 3])):
        folder = root / "frames" / name
        folder.mkdir(parents=True)
        for n, f in zip(numbers, face_frames(3, 0)):
            cv2.imwrite(str(folder / f"{n:04d}.png"), f)
        write_labels(root / "labels" / f"{name}.csv", [0, 1, 2], label_rows(3, 0))
    (root / "manifest.csv").write_text("video,subject\nframes/a,p1\nframes/b,p2\n")
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    assert [f["video"] for f in summary["failures"]] == ["frames__b"]
    assert "skip frame numbers" in summary["failures"][0]["reason"]
    assert len(open_cache(tmp_path / "cache")) == 3


def test_disfa_intensities_binarised_in_the_cache(tmp_path):
    root = tmp_path / "disfa"
    write_video(root / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi", face_frames(4, 3))
    levels = {1: [0, 1, 2, 5], 12: [3, 0, 1, 2]}
    for au, vals in levels.items():
        path = root / "ActionUnit_Labels" / "SN001" / f"SN001_au{au}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{f + 1},{v}\n" for f, v in enumerate(vals)))
    run_preprocess(root, tmp_path / "c2", PreprocessOptions(workers=1))
    run_preprocess(root, tmp_path / "c3", PreprocessOptions(workers=1, threshold=3))
    c2, c3 = open_cache(tmp_path / "c2"), open_cache(tmp_path / "c3")
    assert c2.au_names == ["AU01", "AU12"] and c2.video.tolist() == ["SN001_left"] * 4
    np.testing.assert_array_equal(c2.labels.T, [[0, 0, 1, 1], [1, 0, 0, 1]])
    np.testing.assert_array_equal(c3.labels.T, [[0, 0, 0, 1], [1, 0, 0, 0]])


def _checksums(out: Path) -> dict[str, str]:
    c = open_cache(out)
    return dict(zip(c.videos, c.checksums))


def test_edited_labels_are_refreshed_without_realigning(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    out = tmp_path / "cache"
    run_preprocess(root, out, PreprocessOptions(workers=1))
    before = open_cache(out)
    crops = {v: before.images[before.video_rows_of(v)] for v in before.videos}
    transforms = {v: np.asarray(before.transform[before.video_rows_of(v)]) for v in before.videos}
    sums = _checksums(out)
    edited = label_rows(N_FRAMES, 50)
    write_labels(root / "labels" / "s2_v1.csv", list(range(N_FRAMES)), edited)
    summary = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert "labels changed for 1 video: refreshed" in summary["notes"]
    assert summary["reruns"]["refreshed"] == ["videos__s2_v1"] and summary["reruns"]["redone"] == []
    assert summary["videos"]["processed_now"] == 0 and summary["videos"]["labels_refreshed"] == 1
    cache = open_cache(out)
    vid = "videos__s2_v1"
    np.testing.assert_array_equal(cache.labels[cache.video == vid], edited)
    # the crops and transforms are the same rows copied, not a second alignment; the other videos untouched
    for v in cache.videos:
        np.testing.assert_array_equal(cache.images[cache.video_rows_of(v)], crops[v])
        np.testing.assert_array_equal(cache.transform[cache.video_rows_of(v)], transforms[v])
    after = _checksums(out)
    assert after[vid] != sums[vid] and all(after[v] == sums[v] for v in sums if v != vid)
    assert (out / "images.u8").stat().st_size == len(cache) * 96 * 96  # the run ended compacted
    # nothing changed since: nothing is done
    again = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert again["reruns"]["refreshed"] == [] and again["videos"]["processed_now"] == 0
    assert _checksums(out) == after


def test_labels_shrink_refresh_and_grow_realign(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    out = tmp_path / "cache"
    rows = label_rows(N_FRAMES, 1)
    path = root / "labels" / "s1_v1.csv"
    write_labels(path, list(range(5)), rows[:5])  # frames 5-7 unlabelled: never aligned
    run_preprocess(root, out, PreprocessOptions(workers=1))
    vid = "videos__s1_v1"
    assert (open_cache(out).video == vid).sum() == 5
    write_labels(path, [0, 1, 3, 4], rows[[0, 1, 3, 4]])  # fewer labelled frames: a refresh drops frame 2
    summary = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert summary["reruns"]["refreshed"] == [vid]
    cache = open_cache(out)
    np.testing.assert_array_equal(cache.frame[cache.video == vid], [0, 1, 3, 4])
    np.testing.assert_array_equal(cache.labels[cache.video == vid], rows[[0, 1, 3, 4]])
    assert "frames have no label row (frames 2, 5-7 in s1_v1.csv)" in " ".join(cache.video_meta[vid]["mismatches"])
    write_labels(path, [0, 1, 2, 3, 4], rows[:5])  # frame 2 back: it was aligned once but its crop is gone
    summary = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert summary["reruns"]["realigned"] == [vid] and summary["videos"]["processed_now"] == 1
    write_labels(path, list(range(N_FRAMES)), rows)  # frames 5-7 labelled now: they must be aligned
    summary = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert summary["reruns"]["realigned"] == [vid] and "now cover frames never aligned" in " ".join(summary["notes"])
    cache = open_cache(out)
    np.testing.assert_array_equal(cache.frame[cache.video == vid], np.arange(N_FRAMES))
    np.testing.assert_array_equal(cache.labels[cache.video == vid], rows)


def test_changed_video_is_redone_and_touched_files_are_not(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    out = tmp_path / "cache"
    run_preprocess(root, out, PreprocessOptions(workers=1))
    sums = _checksums(out)
    for f in list((root / "videos").iterdir()) + list((root / "labels").iterdir()):  # a copy: new times, same bytes
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    summary = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert summary["videos"]["processed_now"] == 0 and len(summary["reruns"]["touched"]) == 3
    assert _checksums(out) == sums
    again = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert again["reruns"]["touched"] == []  # the new times were recorded: the quick check suffices now
    write_video(root / "videos" / "s3_v1.avi", face_frames(N_FRAMES, 9))  # new content
    summary = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert summary["reruns"]["redone"] == ["videos__s3_v1"] and summary["videos"]["processed_now"] == 1
    assert "video content changed for 1 video: redone" in summary["notes"]
    after = _checksums(out)
    assert after["videos__s3_v1"] != sums["videos__s3_v1"]
    assert all(after[v] == sums[v] for v in sums if v != "videos__s3_v1")
    (root / "labels" / "s1_v1.csv").unlink()  # its labels are gone: the video leaves the cache
    summary = run_preprocess(root, out, PreprocessOptions(workers=1))
    assert summary["reruns"]["removed"] == ["videos__s1_v1"] and "videos__s1_v1" not in open_cache(out).videos


def test_adding_subjects_keeps_every_split_in_the_cache(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    out = tmp_path / "cache"
    first = run_preprocess(root, out, PreprocessOptions(workers=1, split_seed=5))
    splits = json.loads((out / "cache.json").read_text())["subjects"]
    assert splits == split_subjects(["s1", "s2", "s3"], seed=5)
    make_dataset(root, subjects=("s1", "s2", "s3", "s4", "s5", "s6"))
    summary = run_preprocess(root, out, PreprocessOptions(workers=1, split_seed=5))
    grown = json.loads((out / "cache.json").read_text())["subjects"]
    assert set(grown) == {"s1", "s2", "s3", "s4", "s5", "s6"} and all(grown[s] == splits[s] for s in splits)
    cache = open_cache(out)
    for subject, split in grown.items():
        assert set(cache.split[cache.subject == subject].tolist()) == {split}
    realised = {s: info["subjects"] for s, info in summary["splits"].items()}
    assert realised == {s: sum(v == s for v in grown.values()) for s in ("train", "val", "test")}
    assert summary["split_warnings"] and all("--split-seed" in w for w in summary["split_warnings"])
    assert first["splits"]["train"]["wanted"] == 0.74
def test_default_split_fills_every_split_and_a_rerun_with_added_subjects_keeps_it(tmp_path):
    """Issue 22, item 1: seed 0 puts s1..s3 all in train; the default uses the seed closest to the shares of those
    that fill train, val and test, records it and says so; adding subjects and rerunning keeps that seed, so no subject moves (a fresh
    choice for the six would be another seed); --overwrite starts afresh."""
    from aubench_cli.data.splits import choose_split_seed

    root, out = tmp_path / "data", tmp_path / "cache"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    assert set(split_subjects(["s1", "s2", "s3"], seed=0).values()) == {"train"}
    first = run_preprocess(root, out, PreprocessOptions(workers=1))
    header = json.loads((out / "cache.json").read_text())
    seed = header["splits"]["seed"]
    assert header["splits"]["seed_from"] == "closest-filling" and first["split_seed"] == {"seed": seed,
                                                                                        "from": "closest-filling"}
    assert sorted(header["subjects"].values()) == ["test", "train", "val"]
    assert any(n.startswith(f"split seed {seed}:") for n in first["notes"])
    make_dataset(root, subjects=("s1", "s2", "s3", "s4", "s5", "s6"))
    grown = run_preprocess(root, out, PreprocessOptions(workers=1))
    after = json.loads((out / "cache.json").read_text())
    assert grown["split_seed"] == {"seed": seed, "from": "recorded"} and after["splits"]["seed"] == seed
    assert all(after["subjects"][s] == header["subjects"][s] for s in ("s1", "s2", "s3"))
    fresh = choose_split_seed([f"s{i}" for i in range(1, 7)])[0]
    assert fresh != seed  # without the record the rerun would have re-split
    again = run_preprocess(root, out, PreprocessOptions(workers=1, overwrite=True))
    assert again["split_seed"] == {"seed": fresh, "from": "closest-filling"}


# -- labels read exactly, reports ---------------------------------------------------------------------------------


def test_a_stray_value_is_unknown_reported_and_fails_only_with_strict(tmp_path):
    root = tmp_path / "data"
    expected = make_dataset(root, subjects=("s1", "s2", "s3"))
    path = root / "labels" / "s2_v1.csv"
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")  # line 4: frame 2
    cells[2] = "9"  # AU12: BP4D's unknown code, a stray in a generic binary file
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cache"
    result = runner.invoke(app, ["preprocess", str(root), "--out", str(out), "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["label_scale"]["scale"] == "binary" and summary["label_scale"]["decided_by"] == "data"
    assert summary["label_values_outside_scale"] == {
        "count": 1, "first": [{"file": "labels/s2_v1.csv", "line": 4, "column": "AU12", "value": "9"}]}
    cache = open_cache(out)
    for vid, rows in expected.items():
        want = rows.copy()
        if vid == "videos__s2_v1":
            want[2, 1] = -1
        np.testing.assert_array_equal(cache.labels[cache.video == vid], want)  # every other label as written
    header = json.loads((out / "cache.json").read_text())
    assert header["settings"]["label_scale"] == "binary" and header["settings"]["crop_pipeline"] == CROP_PIPELINE_VERSION == 3
    # --strict: the same run (resumed, nothing redone) exits 1, and the text summary names the cell
    result = runner.invoke(app, ["preprocess", str(root), "--out", str(out), "--workers", "1", "--strict"])
    assert result.exit_code == 1, result.output
    assert "labels/s2_v1.csv line 4 column AU12: '9'" in result.output and "label scale" in result.output
    result = runner.invoke(app, ["preprocess", str(root), "--out", str(out), "--label-scale", "binari"])
    assert result.exit_code == 2 and "binary" in result.output


def test_faceless_videos_listed_worst_first(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    for name, blank in (("s1_v1", (5,)), ("s3_v1", (2, 3, 4))):
        frames = face_frames(N_FRAMES, 0)
        for i in blank:
            frames[i] = np.full_like(frames[i], 90)
        write_video(root / "videos" / f"{name}.avi", frames)
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    assert summary["videos_with_faceless_frames"] == [
        {"video": "videos__s3_v1", "no_face": 3, "frames_labelled": N_FRAMES, "pct": 37.5},
        {"video": "videos__s1_v1", "no_face": 1, "frames_labelled": N_FRAMES, "pct": 12.5},
    ]
    assert summary["no_face_frames"] == 4 and summary["implausible_alignments"] == 0


def test_track_corrections_are_counted_per_video_and_in_the_summary(tmp_path):
    # synthetic videos whose head pose jumps every frame (aubench synth --motion jumpy): the followed landmarks fail
    # the check against the face on most frames, and each such frame is aligned afresh and counted
    from aubench_cli.data.synth import SynthConfig, synthesize

    synthesize(tmp_path / "data", SynthConfig(subjects=2, videos_per_subject=1, frames=12, motion="jumpy"))
    summary = run_preprocess(tmp_path / "data", tmp_path / "cache", PreprocessOptions(workers=1))
    meta = open_cache(tmp_path / "cache").video_meta
    corrections = {vid: m["track_corrections"] for vid, m in meta.items()}
    assert len(corrections) == 2 and all(n >= 6 for n in corrections.values()), corrections
    assert summary["track_corrections"] == sum(corrections.values())
    assert all(m["faces"] == 12 for m in meta.values())


def test_overwrite_after_a_killed_compaction_brings_back_no_old_video(tmp_path, monkeypatch):
    # issue 22: a run killed after its compaction's COMPLETE marker, then --overwrite with other settings on a
    # dataset that has only 2 of the 4 videos: the rebuild must hold those 2, made anew, and nothing old
    import aubench_cli.data.cache as cache_module
    from aubench_cli.data.cache import consolidate, remove_video

    old_root, new_root, out = tmp_path / "old", tmp_path / "new", tmp_path / "cache"
    make_dataset(old_root)
    run_preprocess(old_root, out, PreprocessOptions(workers=1))
    remove_video(out, "videos__s4_v1")  # dead rows: the next consolidate compacts

    def killed(cache_dir):
        raise KeyboardInterrupt  # the kill, after the marker, before the renames

    monkeypatch.setattr(cache_module, "_finish_compaction", killed)
    with pytest.raises(KeyboardInterrupt):
        consolidate(out)
    monkeypatch.undo()
    make_dataset(new_root, subjects=("s1", "s2"))
    summary = run_preprocess(new_root, out, PreprocessOptions(workers=1, threshold=3, overwrite=True))
    cache = open_cache(out)
    assert sorted(cache.videos) == ["videos__s1_v1", "videos__s2_v1"]
    assert summary["videos"]["processed_now"] == 2 and summary["videos"]["already_done"] == 0
    assert cache.header["settings"]["threshold"] == 3 and not list(out.glob(".compact-*"))


def test_truncated_video_is_reported_with_its_frame_counts(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1", "s2", "s3"))
    video = root / "videos" / "s1_v1.avi"
    write_video(video, face_frames(16, 0))
    write_labels(root / "labels" / "s1_v1.csv", list(range(16)), label_rows(16, 0))
    data_bytes = video.read_bytes()
    video.write_bytes(data_bytes[: int(len(data_bytes) * 0.6)])  # cut: the container still says 16 frames
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    meta = open_cache(tmp_path / "cache").video_meta["videos__s1_v1"]
    decoded = meta["frames_read"]
    assert 0 < decoded < 16
    issues = " | ".join(next(m["issues"] for m in summary["mismatches"] if m["video"] == "videos__s1_v1"))
    assert f"the container says 16 frames but {decoded} were decoded" in issues
    assert f"{16 - decoded} label rows have no frame (frames {decoded}-15 of s1_v1.csv" in issues


def barcode_frames(n: int, bits: int = 4) -> list[np.ndarray]:
    """The photo, moving a little, each frame carrying its own index as ``bits`` black/white squares on the
    forehead (placed through the face's own alignment, so they land in the crop's top rows)."""
    from aubench_cli.data.align import alignment_transform, apply_transform

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    marks = np.array([[194.6, 100.9], [256.7, 104.1], [224.1, 131.2], [221.3, 175.5]])
    frames = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((224.0, 130.0), 2.0 * (i % 3), 1.0)
        m[:, 2] += np.array([320 - 224 + 3 * (i % 4), 240 - 130])
        frame = cv2.warpAffine(photo, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)
        to_frame = cv2.invertAffineTransform(alignment_transform(marks @ m[:, :2].T + m[:, 2]))
        for b in range(bits):
            x0, y0 = BAR_X[b], BAR_Y
            square = np.array([[x0, y0], [x0 + BAR, y0], [x0 + BAR, y0 + BAR], [x0, y0 + BAR]], np.float64)
            pts = np.round(apply_transform(to_frame, square)).astype(np.int32)
            cv2.fillConvexPoly(frame, pts, (255, 255, 255) if (i >> b) & 1 else (0, 0, 0))
        frames.append(frame)
    return frames


BAR, BAR_Y, BAR_X = 12, 2, (18, 32, 50, 64)  # crop pixels: squares of the forehead barcode


def read_barcode(crop: np.ndarray, bits: int = 4) -> int:
    value = 0
    for b in range(bits):
        x0 = BAR_X[b]
        value |= int(crop[BAR_Y + 3 : BAR_Y + BAR - 3, x0 + 3 : x0 + BAR - 3].mean() > 128) << b
    return value


def test_crop_i_is_the_crop_of_frame_i(tmp_path):
    root = tmp_path / "data"
    n = 14
    write_video(root / "videos" / "a.avi", barcode_frames(n))
    labelled = list(range(3, n))  # frames 0-2 have no label row
    rows = np.array([[f % 2, (f // 2) % 2] for f in labelled])
    write_labels(root / "labels" / "a.csv", labelled, rows)
    (root / "manifest.csv").write_text("video,subject\nvideos/a.avi,p1\n")
    summary = run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    cache = open_cache(tmp_path / "cache")
    assert summary["faces_found"] == len(labelled) == len(cache)
    np.testing.assert_array_equal(cache.frame, labelled)
    shown = [read_barcode(cache.images[j]) for j in range(len(cache))]
    np.testing.assert_array_equal(shown, cache.frame)  # the crop shows the frame it claims to be
    np.testing.assert_array_equal(cache.labels, rows)  # with that frame's labels


def test_a_video_skipped_for_its_label_file_is_named_and_fails_the_command(tmp_path):
    root = tmp_path / "data"
    make_dataset(root)
    label = root / "labels" / "s2_v1.csv"
    label.write_text("fr@me;;AU 1,xx\n" + label.read_text().split("\n", 1)[1])  # a garbled header
    result = runner.invoke(app, ["preprocess", str(root), "--out", str(tmp_path / "cache"), "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert "skipped videos/s2_v1.avi: label file" in " ".join(result.stderr.split())  # the file, not an internal id
    assert "videos__s2_v1" not in result.stderr
    assert "error: 1 video skipped" in " ".join(result.stderr.split())


def test_the_chosen_split_seed_is_checked_again_on_the_frames_with_a_face(tmp_path):
    """The label files give the val subject AU01 positives, so seed 0 balances every split by them; but those
    frames have no face, so the cache's val split would hold no AU01 positive and training would refuse. The seed
    is chosen again on the frames kept, recorded, and said."""
    subjects = next(names for j in range(100) for names in [[f"p{j}s{i}" for i in range(8)]]
                    if set(split_subjects(names, (0.74, 0.11, 0.15), 0).values()) == {"train", "val", "test"})
    where = split_subjects(subjects, (0.74, 0.11, 0.15), 0)  # seed 0 puts a subject in every split
    val = [s for s in subjects if where[s] == "val"]
    root = tmp_path / "data"
    manifest = ["video,subject"]
    for i, subject in enumerate(subjects):
        frames = face_frames(N_FRAMES, i)
        rows = np.array([[f % 2, (f + 1) % 2] for f in range(N_FRAMES)])  # both AUs both ways, every subject
        if subject in val:
            rows[:, 0] = 0
            rows[[5, 6], 0] = 1  # its only AU01 positives ...
            for f in (5, 6):
                frames[f] = np.full_like(frames[f], 90)  # ... on frames without a face
        write_video(root / "videos" / f"{subject}_v1.avi", frames)
        write_labels(root / "labels" / f"{subject}_v1.csv", list(range(N_FRAMES)), rows)
        manifest.append(f"videos/{subject}_v1.avi,{subject}")
    (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    out = tmp_path / "cache"
    summary = run_preprocess(root, out, PreprocessOptions(workers=2))
    assert summary["no_face_frames"] == 2 * len(val)
    assert summary["split_seed"]["from"] == "closest-balancing" and summary["split_seed"]["seed"] != 0
    assert any(n.startswith("on the frames with a face found, split seed") for n in summary["notes"])
    cache = open_cache(out)
    assert json.loads((out / "cache.json").read_text())["splits"]["seed"] == summary["split_seed"]["seed"]
    for split in ("train", "val", "test"):
        labels = cache.labels[cache.indices(split)]
        assert len(labels) and (labels == 1).any(0).all() and (labels == 0).any(0).all(), split
