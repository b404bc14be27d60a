"""``aubench predict``: the crops of preprocess, one row per decoded frame, thresholds, resume, pictures, refusals."""

from __future__ import annotations

import csv
import importlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.data import align
from aubench_cli.data.align import CROP_PIPELINE_VERSION
from aubench_cli.data.cache import open_cache
from aubench_cli.data.preprocess import PreprocessOptions, run_preprocess
from aubench_cli.errors import UsageError
from aubench_cli.evaluation.evaluate import evaluate_run
from aubench_cli.evaluation.predict import PredictOptions, list_inputs, read_predictions, run_predict
from aubench_cli.training.inference import f1_threshold, load_run_model
from aubench_cli.training.trainer import train
from aubench_cli.training.transforms import normalize, to_float
from cachefixture import AUS, make_cache
from test_preprocess import face_frames, make_dataset, write_video

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A baseline run trained briefly on the synthetic-square cache (its AUs: AUS)."""
    root = tmp_path_factory.mktemp("predict")
    cache = make_cache(root / "cache")
    header = json.loads((cache / "cache.json").read_text())
    header["settings"]["crop_pipeline"] = CROP_PIPELINE_VERSION  # as preprocess writes it, whatever the version
    (cache / "cache.json").write_text(json.dumps(header))
    cfg = cfgmod.resolve(sets=["train.epochs=2", "train.batches_per_epoch=4", "train.val_batches=2", "train.aug=A"],
                         options={"data.cache": str(cache), "model.arch": "baseline"})
    train(cfg, root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames of a moving face with 4 faceless (grey) frames in the middle: frames 4-7."""
    frames = face_frames(12, 3)
    for i in range(4, 8):
        frames[i] = np.full_like(frames[i], 128)
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    write_video(path, frames)
    return path


def rows_of(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def opts(out: Path, **kw) -> PredictOptions:
    return PredictOptions(out=out, workers=kw.pop("workers", 1), **kw)


# -- thresholds ---------------------------------------------------------------------------------------------------


def test_f1_threshold_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.35, 0.2, 0.6])
    labels = np.array([1, 1, 0, 1, 0, 0, -1])  # the unknown (0.6) must be ignored
    t, f1 = f1_threshold(scores, labels)
    # top 4 known called positive (TP 3, FP 1, FN 0): F1 6/7, better than 0.5's 0.8; cut between 0.4 and 0.35
    assert t == pytest.approx(0.375) and f1 == pytest.approx(6 / 7)
    # equal scores cannot be split: the cut falls below the tied pair
    t, f1 = f1_threshold(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0]))
    assert t == pytest.approx(0.3) and f1 == pytest.approx(0.8)
    assert f1_threshold(np.array([0.2, 0.7]), np.array([0, 0])) == (0.5, None)
    # a tie (top 1: TP 1, FP 0; top 4: TP 2, FP 2; both F1 2/3): the higher cut wins
    t, f1 = f1_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 0, 1]))
    assert t == pytest.approx(0.85) and f1 == pytest.approx(2 / 3)


def test_val_thresholds_are_stored_and_maximise_f1(trained):
    data = json.loads((trained / "thresholds.json").read_text())
    cache = open_cache(data["cache"]["path"])
    assert data["cache"]["au_names"] == AUS
    run = load_run_model(trained / "best.pt")
    val = cache.indices("val")
    with torch.inference_mode():
        x = normalize(to_float(torch.from_numpy(np.asarray(cache.images[val]))), run.norm, run.stats)
        scores = torch.sigmoid(run.model(x)).numpy()
    entry = data["checkpoints"]["best"]
    assert entry["frames"] == len(val) and set(data["checkpoints"]) == {"best", "last"}
    for k, au in enumerate(AUS):
        y = cache.labels[val, k]
        known = y >= 0

        def f1(t: float) -> float:
            pred, truth = scores[known, k] >= t, y[known] == 1
            tp = (pred & truth).sum()
            return 2 * tp / (2 * tp + (pred & ~truth).sum() + (~pred & truth).sum())

        best = max(f1(t) for t in [*np.unique(scores[known, k]), 0.5])
        assert f1(entry["thresholds"][au]) == pytest.approx(best)
        assert entry["f1"][au] == pytest.approx(best)


def test_eval_recomputes_missing_thresholds(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "thresholds.json").unlink()
    evaluate_run(run, batches=5)
    data = json.loads((run / "thresholds.json").read_text())
    assert data["checkpoints"]["best"] == json.loads((trained / "thresholds.json").read_text())["checkpoints"]["best"]


# -- the same crops as preprocess ----------------------------------------------------------------------------------


def test_predictions_equal_the_model_on_the_cache_crops(trained, tmp_path):
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1",))
    run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    cache = open_cache(tmp_path / "cache")
    assert cache.header["settings"]["crop_pipeline"] == CROP_PIPELINE_VERSION
    run = load_run_model(trained / "best.pt")
    with torch.inference_mode():
        x = normalize(to_float(torch.from_numpy(np.asarray(cache.images[np.arange(len(cache))]))), run.norm, run.stats)
        expected = torch.sigmoid(run.model(x)).numpy()
    summary = run_predict(trained, [root / "videos" / "s1_v1.avi"], opts(tmp_path / "out", batch=3))
    got = read_predictions(tmp_path / "out" / "s1_v1.csv", AUS)
    assert summary["faces_found"] == len(cache) and np.all(got["success"] == 1)
    np.testing.assert_array_equal(got["frame"], cache.frame)
    assert np.abs(got["probs"] - expected).max() < 1e-5
    assert got["timestamp"] == pytest.approx(np.arange(len(cache)) / 30.0, abs=1e-6)


# -- rows -------------------------------------------------------------------------------------------------------------


def test_faceless_frames_keep_their_rows_with_empty_cells(trained, clip, tmp_path):
    run_predict(trained, [clip], opts(tmp_path))
    columns, rows = rows_of(tmp_path / "clip.csv")
    assert columns == (["frame", "timestamp", "face_id", "confidence", "success"] + [f"{a}_p" for a in AUS]
                       + [f"{a}_c" for a in AUS])
    assert [int(r["frame"]) for r in rows] == list(range(12))
    for r in rows:
        faceless = 4 <= int(r["frame"]) < 8
        assert r["success"] == ("0" if faceless else "1") and r["face_id"] == "0"
        assert r["timestamp"] != ""
        cells = [r[c] for c in columns[5:]] + [r["confidence"]]
        if faceless:
            assert all(c == "" for c in cells)
        else:
            assert all(c != "" for c in cells) and 0 < float(r["confidence"]) <= 1
            for au in AUS:
                assert r[f"{au}_c"] == ("1" if float(r[f"{au}_p"]) >= 0.5 else "0")
    side = json.loads((tmp_path / "clip.json").read_text())
    assert side["frames"] == 12 and side["faces"] == 8 and side["crop_pipeline"] == CROP_PIPELINE_VERSION
    assert side["checkpoint_sha256"] and side["thresholds"] == {a: 0.5 for a in AUS}


def test_truncated_video_has_one_row_per_decoded_frame(trained, tmp_path):
    path = tmp_path / "cut.avi"
    write_video(path, face_frames(30, 1))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.55)])
    cap = cv2.VideoCapture(str(path))
    decodable = 0
    while cap.grab():
        decodable += 1
    cap.release()
    assert 0 < decodable < 30
    summary = run_predict(trained, [path], opts(tmp_path / "out"))
    _, rows = rows_of(tmp_path / "out" / "cut.csv")
    assert len(rows) == decodable == summary["frames"]
    assert [int(r["frame"]) for r in rows] == list(range(decodable))


def test_val_thresholds_decide_the_c_columns(trained, clip, tmp_path):
    summary = run_predict(trained, [clip], opts(tmp_path, threshold="val"))
    stored = json.loads((trained / "thresholds.json").read_text())["checkpoints"]["best"]["thresholds"]
    assert summary["thresholds"] == stored and summary["threshold"] == "val"
    _, rows = rows_of(tmp_path / "clip.csv")
    for r in (r for r in rows if r["success"] == "1"):
        for au in AUS:
            assert r[f"{au}_c"] == ("1" if float(r[f"{au}_p"]) >= stored[au] else "0")
    assert json.loads((tmp_path / "clip.json").read_text())["thresholds"] == stored


# -- pictures ---------------------------------------------------------------------------------------------------------


def test_plot_and_overlay_are_written(trained, clip, tmp_path):
    result = runner.invoke(app, ["predict", str(trained), str(clip), "--out", str(tmp_path), "--plot", "--overlay",
                                 "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    png, video = tmp_path / "clip.png", tmp_path / "clip.overlay.mp4"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.grab():
        n += 1
    assert n == 12
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# -- resume ---------------------------------------------------------------------------------------------------------


def test_resume_keeps_finished_videos_and_redoes_half_written_ones(trained, tmp_path):
    videos = tmp_path / "videos"
    for i in range(3):
        write_video(videos / f"v{i}.avi", face_frames(6, i))
    out = tmp_path / "out"
    first = run_predict(trained, [videos], opts(out))
    assert first["videos"]["predicted_now"] == 3
    before = {i: (out / f"v{i}.csv").read_text() for i in range(3)}
    stamps = {i: (out / f"v{i}.csv").stat().st_mtime_ns for i in range(3)}
    # an interruption: v1 was being written (its temp CSV remains, the old outputs were gone), v2's CSV was
    # renamed into place but its sidecar never written
    (out / "v1.csv").unlink()
    (out / "v1.json").unlink()
    (out / ".v1.csv.tmp-deadbeef.csv").write_text("frame,timestamp\n0,")
    (out / "v2.json").unlink()
    again = run_predict(trained, [videos], opts(out))
    assert again["videos"] == {"listed": 3, "predicted_now": 2, "kept": 1, "failed": 0}
    assert (out / "v0.csv").stat().st_mtime_ns == stamps[0]
    assert {i: (out / f"v{i}.csv").read_text() for i in range(3)} == before
    assert not list(out.glob(".*tmp*")) and again["partial_files_removed"]
    assert again["frames"] == 18
    # another threshold: nothing matches, everything is redone
    third = run_predict(trained, [videos], opts(out, threshold="0.3"))
    assert third["videos"]["predicted_now"] == 3
    assert json.loads((out / "v0.json").read_text())["thresholds"] == {a: 0.3 for a in AUS}
    # a CSV whose length disagrees with its sidecar (damaged) is redone too
    (out / "v0.csv").write_text((out / "v0.csv").read_text()[:-20])
    fourth = run_predict(trained, [videos], opts(out, threshold="0.3"))
    assert fourth["videos"]["predicted_now"] == 1 and fourth["videos"]["kept"] == 2


def test_a_crash_before_the_sidecar_never_leaves_an_old_sidecar_vouching(trained, clip, tmp_path, monkeypatch):
    from aubench_cli.evaluation import predict

    run_predict(trained, [clip], opts(tmp_path, threshold="0.5"))
    real = predict.atomic_write_text

    def crash(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(predict, "atomic_write_text", crash)  # the CSV of 0.3 is renamed, its sidecar never written
    assert run_predict(trained, [clip], opts(tmp_path, threshold="0.3"))["videos"]["failed"] == 1
    monkeypatch.setattr(predict, "atomic_write_text", real)
    again = run_predict(trained, [clip], opts(tmp_path, threshold="0.5"))
    assert again["videos"]["predicted_now"] == 1  # the CSV on disk was made at 0.3: not kept as a 0.5 one


def test_a_cache_without_crop_pipeline_reruns_as_version_1(tmp_path, monkeypatch):
    monkeypatch.setattr(align, "CROP_PIPELINE_VERSION", 1)  # the rule holds for version 1, whatever the current one
    root = tmp_path / "data"
    make_dataset(root, subjects=("s1",))
    run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    path = tmp_path / "cache" / "cache.json"
    header = json.loads(path.read_text())
    del header["settings"]["crop_pipeline"]  # as made before the key existed
    path.write_text(json.dumps(header))
    assert run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))["videos"]["already_done"] == 1
    header = json.loads(path.read_text())
    header["settings"]["crop_pipeline"] = CROP_PIPELINE_VERSION + 1
    path.write_text(json.dumps(header))
    with pytest.raises(UsageError, match="crop_pipeline"):
        run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))
    del header["settings"]["crop_pipeline"]
    path.write_text(json.dumps(header))
    monkeypatch.setattr(align, "CROP_PIPELINE_VERSION", 2)  # after a change of the crop code, the old cache is refused
    with pytest.raises(UsageError, match="crop_pipeline"):
        run_preprocess(root, tmp_path / "cache", PreprocessOptions(workers=1))


# -- names ----------------------------------------------------------------------------------------------------------


def test_output_names_follow_the_relative_paths_without_collisions(tmp_path):
    root = tmp_path / "in"
    for rel in ("a/clip.mp4", "b/clip.mp4", "c/x.mp4", "c/x.avi", "top.avi"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    frames = root / "d" / "seq"
    frames.mkdir(parents=True)
    (frames / "0001.png").write_bytes(b"")
    names = sorted(v.name for v in list_inputs([root]))
    assert names == ["a/clip", "b/clip", "c/x.avi", "c/x.mp4", "d/seq", "top"]
    assert [v.name for v in list_inputs([root / "a" / "clip.mp4"])] == ["clip"]
    assert [v.name for v in list_inputs([frames])] == ["seq"]
    with pytest.raises(UsageError, match="would both write"):
        list_inputs([root / "a" / "clip.mp4", root / "b" / "clip.mp4"])
    with pytest.raises(UsageError, match="holds no video"):
        (tmp_path / "empty").mkdir()
        list_inputs([tmp_path / "empty"])
    # the output folder inside an input is never searched (it holds overlay videos)
    (root / "predictions").mkdir()
    (root / "predictions" / "top.overlay.mp4").write_bytes(b"")
    assert len(list_inputs([root], exclude=root / "predictions")) == 6


# -- bad input ------------------------------------------------------------------------------------------------------


def test_corrupt_video_is_reported_and_the_others_finish(trained, tmp_path):
    videos = tmp_path / "videos"
    for i in range(2):
        write_video(videos / f"good{i}.avi", face_frames(6, i))
    (videos / "broken.avi").write_bytes(b"not a video at all" * 100)
    result = runner.invoke(app, ["predict", str(trained), str(videos), "--out", str(tmp_path / "out"),
                                 "--workers", "2", "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["videos"]["failed"] == 1 and summary["videos"]["predicted_now"] == 2
    assert summary["failures"][0]["video"].endswith("broken.avi")
    assert (tmp_path / "out" / "good0.csv").is_file() and (tmp_path / "out" / "good1.csv").is_file()
    assert not (tmp_path / "out" / "broken.csv").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_runs_and_inputs_that_cannot_be_used_are_clear_errors(trained, clip, tmp_path):
    def refused(run, inputs, needle, **kw):
        with pytest.raises(UsageError, match=needle):
            run_predict(run, inputs, opts(tmp_path / "out", **kw))

    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    refused(empty_run, [clip], "no best checkpoint")
    refused(tmp_path / "nowhere", [clip], "not found")
    no_best = tmp_path / "no_best"
    shutil.copytree(trained, no_best)
    (no_best / "best.pt").unlink()
    refused(no_best, [clip], "--checkpoint last")
    (tmp_path / "nothing").mkdir()
    refused(trained, [tmp_path / "nothing"], "holds no video")
    refused(trained, [], "no input")
    refused(trained, [clip], "between 0 and 1", threshold="1.5")

    for key, value, needle in (("crop_pipeline", CROP_PIPELINE_VERSION + 1, "crop pipeline version"),
                               ("crop_size", 64, "64x64 crops")):
        other = tmp_path / f"other_{key}"
        shutil.copytree(trained, other)
        data = json.loads((other / "thresholds.json").read_text())
        data["cache"]["settings"][key] = value
        (other / "thresholds.json").write_text(json.dumps(data))
        refused(other, [clip], needle)
    other = tmp_path / "other_aus"
    shutil.copytree(trained, other)
    data = json.loads((other / "thresholds.json").read_text())
    data["cache"]["au_names"] = AUS[:2]
    (other / "thresholds.json").write_text(json.dumps(data))
    refused(other, [clip], "does not label")
    data["cache"]["au_names"] = AUS
    data["cache"]["created"] = "2030-01-01T00:00:00+00:00"  # the cache was rebuilt after the run was trained
    (other / "thresholds.json").write_text(json.dumps(data))
    refused(other, [clip], "was rebuilt")

    # no thresholds.json: the crop settings come from the run's cache; --threshold val has nothing to use
    bare = tmp_path / "bare"
    shutil.copytree(trained, bare)
    (bare / "thresholds.json").unlink()
    refused(bare, [clip], "no validation thresholds", threshold="val")
    assert run_predict(bare, [clip], opts(tmp_path / "ok"))["frames"] == 12
    # ... and a cache header without crop_pipeline counts as version 1, one with another version is refused
    cache_json = Path(json.loads((bare / "data.json").read_text())["cache"]) / "cache.json"
    saved = cache_json.read_text()
    header = json.loads(saved)
    try:
        header["settings"]["crop_pipeline"] = CROP_PIPELINE_VERSION + 1
        cache_json.write_text(json.dumps(header))
        refused(bare, [clip], "crop pipeline version")
        del header["settings"]["crop_pipeline"]
        cache_json.write_text(json.dumps(header))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(align, "CROP_PIPELINE_VERSION", 1)
            assert run_predict(bare, [clip], opts(tmp_path / "v1"))["frames"] == 12
            mp.setattr(align, "CROP_PIPELINE_VERSION", 2)
            refused(bare, [clip], "crop pipeline version 1, but this aubench makes version 2")
    finally:
        cache_json.write_text(saved)

    result = runner.invoke(app, ["predict", str(empty_run), str(clip), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no best checkpoint" in result.output


def test_predict_forkserver_preloads_modules_that_exist():
    from aubench_cli.evaluation import predict

    for name in predict.FORKSERVER_PRELOAD:
        importlib.import_module(name)
    assert "aubench_cli.evaluation.predict" in predict.FORKSERVER_PRELOAD and "torch" in predict.FORKSERVER_PRELOAD


# -- what the pictures show ------------------------------------------------------------------------------------------


def test_overlay_leaves_the_face_visible_and_shows_values_and_thresholds():
    from types import SimpleNamespace

    from aubench_cli.evaluation.predict import draw_overlay, panel_layout

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    landmarks = np.array([[300.0, 200.0], [340.0, 200.0], [320.0, 260.0]])
    face = SimpleNamespace(landmarks=landmarks, crop=np.full((96, 96), 200, np.uint8))
    aus, thresholds = ["AU01", "AU02", "AU12"], np.array([0.5, 0.5, 0.3])
    out = draw_overlay(frame, face, np.array([0.8, 0.2, 0.25]), aus, thresholds)
    g = panel_layout(480, 640, 3)
    assert out.shape == (480, 640 + g["width"], 3)
    changed = np.any(out[:, :640] != frame, axis=2)
    assert changed.sum() <= 9 * len(landmarks)  # the frame is untouched but for the landmark dots
    bx, bw, row = g["bar_x"], g["bar_w"], g["row"]

    def pixel(i: int, frac: float) -> tuple[int, ...]:
        return tuple(int(v) for v in out[g["top"] + i * row + row // 2, bx + int(frac * bw)])

    assert pixel(0, 0.7) == (60, 200, 60)  # 0.8 >= 0.5: green up to 0.8
    assert pixel(1, 0.1) == (170, 170, 170) and pixel(1, 0.3) == (70, 70, 70)  # 0.2 < 0.5: grey up to 0.2
    assert pixel(2, 0.2) == (170, 170, 170)  # 0.25 < its own threshold 0.3
    for i, t in enumerate(thresholds):  # the threshold tick, white, in each row
        x = bx + int(round(bw * t))
        assert tuple(int(v) for v in out[g["top"] + i * row + row // 2, x]) == (255, 255, 255)
    # the value in figures right of the bar: another probability writes other pixels there
    other = draw_overlay(frame, face, np.array([0.3, 0.2, 0.25]), aus, thresholds)
    value = (slice(g["top"], g["top"] + row), slice(bx + bw + 2, out.shape[1]))
    assert np.any(out[value] != other[value])
    assert np.any(out[value] != 32)  # something written on the panel's background
    # no face: the frame as it is, the panel says so
    blank = draw_overlay(frame, None, None, aus, thresholds)
    assert np.array_equal(blank[:, :640], frame)


def test_plot_lanes_have_a_0_half_1_scale(trained, clip, tmp_path):
    import matplotlib.pyplot as plt

    from aubench_cli.evaluation.predict import draw_prediction_plot

    run_predict(trained, [clip], opts(tmp_path))
    fig = draw_prediction_plot(tmp_path / "clip.csv", AUS, np.full(len(AUS), 0.5))
    try:
        lanes = fig.axes
        assert len(lanes) == len(AUS)
        for ax in lanes:
            assert list(ax.get_yticks()) == [0, 0.5, 1]
            assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "0.5", "1"]
            low, high = ax.get_ylim()
            assert low <= 0 and high >= 1
    finally:
        plt.close(fig)


def test_timestamps_start_at_0_when_the_container_starts_before_it(trained, clip, tmp_path, monkeypatch):
    """OpenCV can report frame 0 of a real clip at -1/60 s (B-frames, edit lists): rows count from frame 0."""
    from aubench_cli.data import preprocess

    real = preprocess.align_video
    offset = -1000 / 60

    def early_container(path, wanted=None, stats=None, **kw):
        for index, number, frame, face in real(path, wanted, stats, **kw):
            stats["msec"] += offset  # every position one 60 fps frame earlier, as such a container reports
            if index == 0:
                stats["first_msec"] = stats["msec"]
            yield index, number, frame, face

    monkeypatch.setattr(preprocess, "align_video", early_container)
    run_predict(trained, [clip], opts(tmp_path))
    got = read_predictions(tmp_path / "clip.csv", AUS)
    assert got["timestamp"][0] == 0.0
    assert got["timestamp"] == pytest.approx(np.arange(12) / 30.0, abs=1e-6)


def test_a_corrupt_video_is_said_once_without_ffmpeg_noise_or_an_empty_table(trained, tmp_path):
    import os
    import subprocess
    import sys

    good = tmp_path / "good.mp4"
    writer = cv2.VideoWriter(str(good), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = good.read_bytes()
    assert data.rfind(b"moov") > len(data) // 2  # mp4v writes the index last
    cut = tmp_path / "cut.mp4"  # an MP4 cut in half loses its index: FFmpeg says 'moov atom not found'
    cut.write_bytes(data[: len(data) // 2])
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "aubench_cli", "predict", str(trained), str(cut), "--out",
                          str(tmp_path / "out"), "--workers", "1"], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}, timeout=300)
    assert out.returncode == 1, out.stderr
    failed = [line for line in out.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1 and "cut.mp4" in failed[0], out.stderr  # above the bar, not again under the summary
    assert "moov atom" not in out.stderr and "[mov," not in out.stderr
    assert "AU presence" not in out.stderr  # no table of '-' when no face was seen
