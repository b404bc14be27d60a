"""``aubench predict`` as a library: a trained run applied to new videos, one CSV of per-frame AUs per video.

``run_predict`` opens the run (its checkpoint, the crop settings of the cache it was trained on, its thresholds),
lists the videos of the inputs (video files, frame folders, folders of them), keeps every finished CSV whose
sidecar JSON matches this run, checkpoint, thresholds and crop pipeline, and hands the other videos to
``workers`` processes (from a forkserver, as ``preprocess`` does). A worker streams its video through the same
per-video frame loop as ``preprocess`` (``data.preprocess.align_video``: decoding, detection, tracking,
4-landmark alignment, 96x96 grayscale), scores the crops ``batch`` at a time with ``training.inference.score_crops``
(the run's normalization, then the network), and appends the rows to a temporary CSV that is renamed into place
when the video is complete: memory stays flat with video length, no frame is ever dropped (a frame without a face
is a row with ``success`` 0 and empty AU cells), and an interrupted run redoes only its half-written videos.
Optional pictures: a plot of the probabilities over time and an overlay video. Returns a JSON-able summary.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aubench_cli import __version__
from aubench_cli.data import preprocess as prep
from aubench_cli.data.cache import now
from aubench_cli.data.labels import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, hidden, is_frame_folder
from aubench_cli.errors import UsageError
from aubench_cli.fileio import atomic_write_text, check_writable
from aubench_cli.training import inference

SIDECAR_FORMAT = "aubench-predictions"
SIDECAR_VERSION = 1
# What a finished CSV must have been made with to be kept by a rerun (besides its own byte count).
MATCH_KEYS = ("format_version", "run", "checkpoint_sha256", "au_names", "threshold", "thresholds",
              "crop_pipeline", "crop_size", "min_confidence", "source")
FORKSERVER_PRELOAD = ["aubench_cli.evaluation.predict", *prep.FORKSERVER_PRELOAD, "torch",
                      "aubench_cli.training.trainer"]
ProgressFn = Callable[[dict], None]


@dataclass
class PredictOptions:
    checkpoint: str = "best"
    out: str | Path = "predictions"
    workers: int = 0  # 0: one per CPU core
    batch: int = 64
    threshold: str = "0.5"  # a probability in (0, 1), or "val": the run's per-AU thresholds on its validation split
    plot: bool = False
    overlay: bool = False


@dataclass
class VideoInput:
    path: Path
    name: str  # output name, relative to --out, without extension (may hold "/": a/clip)


# -- inputs ------------------------------------------------------------------------------------------------------


def list_inputs(inputs: list[str | Path], exclude: Path | None = None) -> list[VideoInput]:
    """The videos of the inputs and the name each one's outputs get.

    A file given alone: its stem. A frame folder (a folder holding images) given alone: its name. Any other
    folder: every video file and frame folder under it, named by the path relative to that folder without the
    extension (``a/clip.mp4`` -> ``a/clip``, so ``a/clip.mp4`` and ``b/clip.mp4`` stay apart). Names that still
    coincide keep their extension (``clip.mp4``, ``clip.avi``); names that coincide even so are an error.
    ``exclude``: a folder never searched (the output folder, which holds overlay videos).
    """
    if not inputs:
        raise UsageError("no input given", "name video files, frame folders, or folders of them")
    found: list[tuple[Path, str, str]] = []  # path, name without extension, name with it
    exclude = exclude.resolve() if exclude is not None else None
    for given in map(Path, inputs):
        if not given.exists():
            raise UsageError(f"input {given} not found", "name existing video files or folders")
        if given.is_file():
            found.append((given, given.stem, given.name))
        elif is_frame_folder(given):
            found.append((given, given.name, given.name))
        else:
            before = len(found)
            for path in _walk(given, exclude):
                rel = path.relative_to(given)
                stem = rel.with_suffix("").as_posix() if path.is_file() else rel.as_posix()
                found.append((path, stem, rel.as_posix()))
            if len(found) == before:
                raise UsageError(f"{given} holds no video file or frame folder",
                                 f"videos are files ending in {', '.join(sorted(VIDEO_EXTENSIONS))}; frame folders "
                                 "hold images")
    by_name: dict[str, list[int]] = {}
    for i, (_, stem, _) in enumerate(found):
        by_name.setdefault(stem, []).append(i)
    names = [stem for _, stem, _ in found]
    for stem, idx in by_name.items():
        if len(idx) > 1:
            for i in idx:
                names[i] = found[i][2]
    seen: dict[str, Path] = {}
    for (path, _, _), name in zip(found, names):
        if name in seen and seen[name].resolve() != path.resolve():
            raise UsageError(f"{seen[name]} and {path} would both write {name}.csv",
                             "give them from one parent folder (names keep the sub-folders), or predict them "
                             "in two runs with different --out")
        seen[name] = path
    unique: dict[str, VideoInput] = {}
    for (path, _, _), name in zip(found, names):
        unique.setdefault(name, VideoInput(path, name))
    return list(unique.values())


def _walk(folder: Path, exclude: Path | None) -> Iterator[Path]:
    """Video files and frame folders under ``folder``, in sorted order, never inside a frame folder."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise UsageError(f"cannot list {folder}: {exc.strerror}", "check its permissions") from None
    for entry in entries:
        if hidden(entry) or (exclude is not None and entry.resolve() == exclude):
            continue
        if entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS:
            yield entry
        elif entry.is_dir():
            if is_frame_folder(entry):
                yield entry
            else:
                yield from _walk(entry, exclude)


def frame_count(path: Path) -> int:
    """Frames a video says it holds (container header) or a frame folder's images; 0 when unknown."""
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not hidden(p))
    import cv2

    from aubench_cli.data.align import quiet_native_stderr

    with quiet_native_stderr():  # a corrupt file's FFmpeg lines ('moov atom not found'): the video's report says it
        cap = cv2.VideoCapture(str(path))
        try:
            return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
        finally:
            cap.release()


# -- the run -----------------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    run: Path
    checkpoint: str
    path: Path  # the checkpoint file
    sha256: str
    arch: str
    epoch: int
    au_names: list[str]
    threshold: str
    thresholds: dict[str, float]
    min_confidence: float
    cache_settings: dict[str, Any]


def parse_threshold(text: str) -> str:
    text = str(text).strip()
    if text == "val":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise UsageError(f"--threshold must be a probability between 0 and 1, or val; got {text!r}",
                         "e.g. --threshold 0.5, or --threshold val for the run's per-AU validation thresholds")
    return repr(value)


def run_cache_record(run: Path) -> dict[str, Any]:
    """The AU list and crop settings of the cache a run was trained on: from the run's thresholds.json, else
    from the cache itself (data.json names it). A cache rebuilt since the run was trained (another ``created``
    than data.json's ``cache_created``) cannot tell: its crops may be newer than the run's."""
    data: dict[str, Any] = {}
    if (run / "data.json").is_file():
        try:
            data = json.loads((run / "data.json").read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
    trained_on = data.get("cache_created")
    stored = inference.read_thresholds_file(run)
    record = stored.get("cache") if stored else None
    cache_path = data.get("cache")
    if not (isinstance(record, dict) and record.get("settings") is not None) and cache_path:
        from aubench_cli.data.cache import read_header

        try:
            header = read_header(Path(cache_path))
            record = {"path": cache_path, "created": header.get("created"), "au_names": header.get("au_names"),
                      "settings": header.get("settings") or {}}
        except UsageError:
            record = None
    if isinstance(record, dict) and record.get("settings") is not None:
        if trained_on and record.get("created") and record["created"] != trained_on:
            raise UsageError(f"the cache {record.get('path')} was rebuilt (created {record['created']}) after run {run} "
                             f"was trained on it (created {trained_on}): its crop settings may not be the run's",
                             "retrain the run on the cache as it is now")
        return record
    raise UsageError(f"cannot tell which crops run {run} was trained on: it has no {inference.THRESHOLDS_FILE} and "
                     f"its cache ({cache_path or 'not named in data.json'}) cannot be read",
                     "restore the run's cache and run 'aubench eval' on the run once, which records them")


def check_crop_settings(run: Path, record: dict[str, Any], au_names: list[str]) -> dict[str, Any]:
    """Refuse a run whose training crops differ from the ones predict makes (size, AU list, crop pipeline)."""
    from aubench_cli.data.align import CROP_PIPELINE_VERSION, CROP_SIZE, LANDMARK_IDS, TEMPLATE

    settings = dict(record.get("settings") or {})
    fix = "retrain the run on a cache made by this aubench ('aubench preprocess ... --overwrite', then train)"
    version = int(settings.get("crop_pipeline", 1))  # caches made before the key existed: version 1
    if version != CROP_PIPELINE_VERSION:
        raise UsageError(f"run {run} was trained on crops of crop pipeline version {version}, but this aubench makes "
                         f"version {CROP_PIPELINE_VERSION} (the alignment code changed): its predictions would be "
                         "made on crops unlike its training ones", fix)
    size = settings.get("crop_size", CROP_SIZE)
    if int(size) != CROP_SIZE:
        raise UsageError(f"run {run} was trained on {size}x{size} crops; predict makes {CROP_SIZE}x{CROP_SIZE}", fix)
    if settings.get("grayscale", True) is not True:
        raise UsageError(f"run {run} was trained on colour crops; predict makes grayscale ones", fix)
    for key, ours in (("landmark_ids", list(LANDMARK_IDS)), ("template", TEMPLATE.tolist())):
        if key in settings and settings[key] != ours:
            raise UsageError(f"run {run} was trained on crops with other {key.replace('_', ' ')} "
                             f"({settings[key]}, predict uses {ours})", fix)
    cache_aus = record.get("au_names")
    if cache_aus is not None:
        missing = [au for au in au_names if au not in cache_aus]
        if missing:
            raise UsageError(f"run {run} predicts {', '.join(missing)}, which its cache ({record.get('path')}) does "
                             f"not label (cache AUs: {', '.join(cache_aus)})", fix)
    return settings


def open_run(run: str | Path, checkpoint: str = "best", threshold: str = "0.5") -> RunSpec:
    """Everything predict needs from a run directory, checked; UsageError with the fix otherwise."""
    from aubench_cli.training.trainer import load_checkpoint

    run = Path(run)
    if checkpoint not in inference.CHECKPOINTS:
        raise UsageError(f"--checkpoint must be best or last, got {checkpoint!r}", "e.g. --checkpoint best")
    if not run.is_dir():
        raise UsageError(f"run directory {run} not found", "name a directory written by aubench train")
    path = run / f"{checkpoint}.pt"
    if not path.is_file():
        others = [c for c in inference.CHECKPOINTS if (run / f"{c}.pt").is_file()]
        raise UsageError(f"run directory {run} has no {checkpoint} checkpoint ({path.name})",
                         f"use --checkpoint {others[0]}" if others else
                         "is this a run directory written by aubench train? (it holds no checkpoint)")
    state = load_checkpoint(path)
    au_names = list(state["au_names"])
    settings = check_crop_settings(run, run_cache_record(run), au_names)
    digest = inference.checkpoint_digest(path)
    mode = parse_threshold(threshold)
    if mode == "val":
        stored = inference.val_thresholds(run, checkpoint, digest)
        missing = [au for au in au_names if au not in stored]
        if missing:
            raise UsageError(f"the validation thresholds of run {run} lack {', '.join(missing)}",
                             f"'aubench eval {run} --checkpoint {checkpoint}' recomputes them")
        thresholds = {au: stored[au] for au in au_names}
    else:
        thresholds = {au: float(mode) for au in au_names}
    return RunSpec(run.resolve(), checkpoint, path.resolve(), digest, state["arch"], int(state.get("epoch", 0)),
                   au_names, mode, thresholds, float(settings.get("min_confidence", 0.5)), settings)


# -- outputs -----------------------------------------------------------------------------------------------------


def csv_columns(au_names: list[str]) -> list[str]:
    return (["frame", "timestamp", "face_id", "confidence", "success"] + [f"{au}_p" for au in au_names]
            + [f"{au}_c" for au in au_names])


def _source_stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    size = st.st_size if path.is_file() else sum(1 for _ in path.iterdir())
    return {"path": str(path.resolve()), "bytes" if path.is_file() else "entries": size, "mtime_ns": st.st_mtime_ns}


def sidecar_match(spec: RunSpec, video: Path) -> dict[str, Any]:
    """The sidecar fields a finished CSV must share with this run to be kept."""
    from aubench_cli.data.align import CROP_PIPELINE_VERSION, CROP_SIZE

    return {
        "format_version": SIDECAR_VERSION, "run": str(spec.run), "checkpoint_sha256": spec.sha256,
        "au_names": spec.au_names, "threshold": spec.threshold, "thresholds": spec.thresholds,
        "crop_pipeline": CROP_PIPELINE_VERSION, "crop_size": CROP_SIZE, "min_confidence": spec.min_confidence,
        "source": _source_stamp(video),
    }


def output_paths(out: Path, name: str) -> dict[str, Path]:
    base = out / name
    return {"csv": base.with_name(base.name + ".csv"), "sidecar": base.with_name(base.name + ".json"),
            "plot": base.with_name(base.name + ".png"), "overlay": base.with_name(base.name + ".overlay.mp4"),
            "overlay_avi": base.with_name(base.name + ".overlay.avi")}


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


def finished(paths: dict[str, Path], match: dict[str, Any]) -> dict[str, Any] | None:
    """The sidecar of a complete CSV made exactly as this run would make it, else None (the video is redone)."""
    side = read_sidecar(paths["sidecar"])
    if side is None or not paths["csv"].is_file():
        return None
    if any(side.get(k) != match[k] for k in MATCH_KEYS):
        return None
    if side.get("csv_bytes") != paths["csv"].stat().st_size:
        return None
    return side


def remove_partials(paths: dict[str, Path]) -> list[str]:
    """Delete temp files an interrupted run left for this video."""
    removed = []
    for key in ("csv", "overlay", "overlay_avi", "plot"):
        p = paths[key]
        if p.parent.is_dir():
            for tmp in p.parent.glob(f".{p.name}.tmp-*"):
                tmp.unlink(missing_ok=True)
                removed.append(str(tmp))
    return removed


def _tmp(path: Path) -> Path:
    # the extension stays last: OpenCV and matplotlib pick the container / format from it
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")


# -- one video (runs in a worker) --------------------------------------------------------------------------------

_model: dict[str, Any] = {}


def _get_model(path: str, sha256: str) -> inference.RunModel:
    if _model.get("key") != (path, sha256):
        if inference.checkpoint_digest(path) != sha256:
            raise RuntimeError(f"{path} changed while predicting (its SHA-256 differs): re-run")
        _model.clear()
        _model.update(key=(path, sha256), run=inference.load_run_model(path))
    return _model["run"]


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def predict_video(task: dict, progress: ProgressFn | None = None) -> dict:
    """Predict one video into its CSV (+ sidecar, plot, overlay); returns the video's report (never raises for a
    bad video: the report says ``failed`` and why, and no partial output is left)."""
    video = Path(task["video"])
    paths = {k: Path(v) for k, v in task["paths"].items()}
    au_names: list[str] = task["au_names"]
    thresholds = np.array([task["thresholds"][au] for au in au_names], dtype=np.float64)
    report: dict[str, Any] = {"name": task["name"], "video": str(video), "status": "ok", "error": None,
                              "frames": 0, "faces": 0, "present": {au: 0 for au in au_names}}
    emit = progress if progress is not None else prep._queue_progress
    start = time.perf_counter()
    tmp_files: list[Path] = []
    try:
        if task.get("plot_only"):
            _plot_from_csv(paths["csv"], paths["plot"], au_names, thresholds)
            report.update(task["sidecar"], status="kept")
            return report
        run = _get_model(task["checkpoint"], task["match"]["checkpoint_sha256"])
        paths["sidecar"].unlink(missing_ok=True)  # a stale sidecar must never vouch for the CSV written next
        paths["csv"].parent.mkdir(parents=True, exist_ok=True)
        tmp_csv = _tmp(paths["csv"])
        tmp_files.append(tmp_csv)
        overlay = _Overlay(paths, au_names, thresholds, tmp_files, _fps(video)) if task.get("overlay") else None
        stats: dict[str, Any] = {}
        present = np.zeros(len(au_names), dtype=np.int64)
        counts = {"frames": 0, "faces": 0}
        batch = max(1, int(task["batch"]))
        # rows waiting for their batch: (frame index, timestamp or None, face or None, frame for the overlay)
        pending: list[tuple[int, float | None, Any, np.ndarray | None]] = []
        n_faces = 0
        with open(tmp_csv, "w", newline="", buffering=1 << 16) as fh:
            fh.write(",".join(csv_columns(au_names)) + "\n")

            def flush() -> None:
                nonlocal n_faces
                crops = [face.crop for _, _, face, _ in pending if face is not None]
                probs = inference.score_crops(run, np.stack(crops)) if crops else None
                j = 0
                lines = []
                for index, ts, face, frame in pending:
                    stamp = "" if ts is None else _fmt(ts, 6)
                    if face is None:
                        lines.append(f"{index},{stamp},0,,0" + "," * (2 * len(au_names)) + "\n")
                        p = None
                    else:
                        p = probs[j]
                        j += 1
                        c = p >= thresholds
                        present[:] += c
                        lines.append(f"{index},{stamp},0,{_fmt(face.confidence, 4)},1,"
                                     + ",".join(_fmt(float(v), 6) for v in p) + ","
                                     + ",".join("1" if v else "0" for v in c) + "\n")
                    if overlay is not None:
                        overlay.write(frame, face, p)
                fh.write("".join(lines))
                counts["frames"] += len(pending)
                counts["faces"] += j
                emit({"event": "frames", "n": len(pending)})
                pending.clear()
                n_faces = 0

            expected = 0
            is_file = video.is_file()
            for index, _, frame, face in prep.align_video(video, None, stats, min_confidence=task["min_confidence"]):
                while expected < index:  # a frame the decoder skipped (unreadable): a row all the same
                    pending.append((expected, None, None, None))
                    expected += 1
                # seconds from the first frame: the container's own clock, shifted so that frame 0 is at 0 (the
                # decoder's first position can be a frame before 0, e.g. -1/60 s on a 60 fps clip)
                ts = ((stats["msec"] - stats.get("first_msec", 0.0)) / 1000.0
                      if is_file and stats.get("msec") is not None else None)
                pending.append((index, ts, face, frame if overlay is not None else None))
                expected = index + 1
                n_faces += face is not None
                if n_faces >= batch or len(pending) >= 4 * batch:
                    flush()
            if pending:
                flush()
        if counts["frames"] == 0:
            raise prep.VideoError(f"no frame could be decoded from {video} (corrupt file or unsupported codec)")
        csv_bytes = tmp_csv.stat().st_size
        os.replace(tmp_csv, paths["csv"])
        tmp_files.remove(tmp_csv)
        if overlay is not None:
            report["overlay"] = str(overlay.finish())
        report.update(frames=counts["frames"], faces=counts["faces"],
                      present={au: int(n) for au, n in zip(au_names, present)})
        sidecar = {
            "format": SIDECAR_FORMAT, **task["match"], "aubench_version": __version__,
            "created": now(), "video": str(video), "name": task["name"],
            "csv": paths["csv"].name, "csv_bytes": csv_bytes, "arch": task["arch"], "checkpoint": task["which"],
            "epoch": task["epoch"], "frames": counts["frames"], "faces": counts["faces"],
            "present": report["present"], "timestamps": "container" if is_file else "none",
            "container_frames": stats.get("container_frames"), "unreadable_frames": int(stats.get("unreadable", 0)),
        }
        atomic_write_text(paths["sidecar"], json.dumps(sidecar, indent=1))
        if task.get("plot"):
            _plot_from_csv(paths["csv"], paths["plot"], au_names, thresholds)
    except prep.VideoError as exc:
        report.update(status="failed", error=str(exc))
    except Exception as exc:  # a decoder, mediapipe or writer failure on one video must not stop the others
        report.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        for tmp in tmp_files:
            tmp.unlink(missing_ok=True)
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report


def _fps(video: Path) -> float:
    """The video's frame rate for its overlay (30 for frame folders or when the container does not say)."""
    if video.is_dir():
        return 30.0
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return float(fps) if fps and 0 < fps < 1000 else 30.0


def panel_layout(h: int, w: int, k: int) -> dict[str, Any]:
    """Where ``draw_overlay`` puts things in the panel to the right of a ``h`` x ``w`` frame with ``k`` AUs: the
    panel's left edge and width, the crop inset's side, and each AU row's top, height, bar start and bar width."""
    pw = max(220, w // 3)
    inset = max(32, min(pw - 16, h // 3))
    top = 8 + inset + 8
    row = max(10, min(24, (h - top - 4) // max(k, 1)))
    if top + row * k > h:  # a short frame: the crop goes, the rows stay
        inset, top = 0, 6
        row = max(10, min(24, (h - top - 4) // max(k, 1)))
    label_w, value_w = 46, 40
    return {"x": w, "width": pw, "inset": inset, "top": top, "row": row, "bar_x": w + 6 + label_w,
            "bar_w": pw - 12 - label_w - value_w}


def draw_overlay(frame: np.ndarray, face: Any, probs: np.ndarray | None, au_names: list[str],
                 thresholds: np.ndarray) -> np.ndarray:
    """One overlay frame: the video frame untouched but for the landmarks (small dots), and beside it a panel with
    the aligned crop and, per AU, its probability as a bar (green at or above its threshold), the threshold as a
    white tick and the value in figures (``-`` where no face was found). The face is never covered."""
    import cv2

    img = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    k = len(au_names)
    g = panel_layout(h, w, k)
    out = np.full((h, w + g["width"], 3), 32, dtype=np.uint8)
    out[:, :w] = img
    font = cv2.FONT_HERSHEY_SIMPLEX
    if face is not None:
        for x, y in face.landmarks.astype(int):
            cv2.circle(out, (int(x), int(y)), 1, (0, 255, 255), -1)
        if g["inset"]:
            crop = cv2.resize(face.crop, (g["inset"], g["inset"]), interpolation=cv2.INTER_AREA)
            x0 = w + (g["width"] - g["inset"]) // 2
            out[8:8 + g["inset"], x0:x0 + g["inset"]] = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    elif g["inset"]:
        cv2.putText(out, "no face", (w + 10, 8 + g["inset"] // 2), font, 0.6, (80, 80, 255), 1, cv2.LINE_AA)
    row, scale = g["row"], max(0.3, min(0.5, g["row"] / 40))
    for i, au in enumerate(au_names):
        y = g["top"] + i * row
        y_text = y + row - max(3, row // 4)
        cv2.putText(out, au, (w + 6, y_text), font, scale, (230, 230, 230), 1, cv2.LINE_AA)
        bx, bw = g["bar_x"], g["bar_w"]
        cv2.rectangle(out, (bx, y + 2), (bx + bw, y + row - 3), (70, 70, 70), -1)
        if probs is not None:
            p = float(probs[i])
            on = p >= thresholds[i]
            cv2.rectangle(out, (bx, y + 2), (bx + int(round(bw * p)), y + row - 3),
                          (60, 200, 60) if on else (170, 170, 170), -1)
            cv2.putText(out, f"{p:.2f}", (bx + bw + 5, y_text), font, scale, (255, 255, 255) if on else (200, 200, 200),
                        1, cv2.LINE_AA)
        else:
            cv2.putText(out, "-", (bx + bw + 5, y_text), font, scale, (150, 150, 150), 1, cv2.LINE_AA)
        tx = bx + int(round(bw * float(thresholds[i])))
        cv2.line(out, (tx, y), (tx, y + row - 1), (255, 255, 255), 1)
    return out


class _Overlay:
    """Writes each frame (``draw_overlay``: the frame, and beside it the aligned crop and one bar per AU
    probability with its value and threshold) into an MP4, else an MJPG AVI."""

    def __init__(self, paths: dict[str, Path], au_names: list[str], thresholds: np.ndarray, tmp_files: list[Path],
                 fps: float):
        self.paths, self.au_names, self.thresholds, self.tmp_files, self.fps = paths, au_names, thresholds, tmp_files, fps
        self.writer = None
        self.tmp: Path | None = None
        self.final: Path | None = None

    def _open(self, frame: np.ndarray):
        import cv2

        h, w = frame.shape[:2]
        for key, fourcc in (("overlay", "mp4v"), ("overlay_avi", "MJPG")):
            tmp = _tmp(self.paths[key])
            self.tmp_files.append(tmp)
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
            if writer.isOpened():
                self.writer, self.tmp, self.final = writer, tmp, self.paths[key]
                return
            writer.release()
        raise RuntimeError("OpenCV can write neither MP4 (mp4v) nor AVI (MJPG) video here")

    def write(self, frame: np.ndarray | None, face: Any, probs: np.ndarray | None) -> None:
        if frame is None:  # an undecodable frame: repeat nothing, draw nothing
            return
        img = draw_overlay(frame, face, probs, self.au_names, self.thresholds)
        if self.writer is None:
            self._open(img)
        self.writer.write(img)

    def finish(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.release()
        os.replace(self.tmp, self.final)
        self.tmp_files.remove(self.tmp)
        return self.final


def read_predictions(path: Path, au_names: list[str]) -> dict[str, np.ndarray]:
    """A prediction CSV as arrays: frame, timestamp (nan when absent), success, and (n, K) probabilities (nan
    where there is no face). Reads row by row (no pandas needed)."""
    frames, stamps, success, probs = [], [], [], []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        cols = [header.index(f"{au}_p") for au in au_names]
        i_ts, i_ok = header.index("timestamp"), header.index("success")
        for row in reader:
            frames.append(int(row[0]))
            stamps.append(float(row[i_ts]) if row[i_ts] else math.nan)
            success.append(int(row[i_ok]))
            probs.append([float(row[c]) if row[c] else math.nan for c in cols])
    return {"frame": np.array(frames, dtype=np.int64), "timestamp": np.array(stamps, dtype=np.float64),
            "success": np.array(success, dtype=np.int8),
            "probs": np.array(probs, dtype=np.float32).reshape(len(frames), len(au_names))}


def _plot_from_csv(csv_path: Path, png: Path, au_names: list[str], thresholds: np.ndarray) -> None:
    """``draw_prediction_plot`` written atomically to ``png``."""
    import matplotlib.pyplot as plt

    fig = draw_prediction_plot(csv_path, au_names, thresholds)
    tmp = _tmp(png)
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, png)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def draw_prediction_plot(csv_path: Path, au_names: list[str], thresholds: np.ndarray):
    """One lane per AU: its probability over time on a 0 / 0.5 / 1 scale (ticks on the right), the threshold
    dashed, frames without a face shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_predictions(csv_path, au_names)
    t = data["timestamp"]
    use_time = len(t) > 0 and not np.isnan(t).any()
    x = t if use_time else data["frame"].astype(np.float64)
    faceless = data["success"] == 0
    k = len(au_names)
    fig, axes = plt.subplots(k, 1, figsize=(12, 0.7 * k + 1.2), sharex=True, squeeze=False)
    for i, (ax, au) in enumerate(zip(axes[:, 0], au_names)):
        if faceless.any():
            ax.fill_between(x, 0, 1, where=faceless, color="0.8", step="mid", linewidth=0)
        ax.plot(x, data["probs"][:, i], linewidth=0.8, color="C0")
        ax.axhline(thresholds[i], color="C3", linestyle="--", linewidth=0.6)
        ax.set_ylim(-0.02, 1.02)
        ax.set_yticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=6)
        ax.yaxis.tick_right()
        ax.grid(axis="y", color="0.85", linewidth=0.5)
        ax.set_ylabel(au, rotation=0, ha="right", va="center", fontsize=8)
        ax.spines["top"].set_visible(False)
    axes[-1, 0].set_xlabel("time (s)" if use_time else "frame")
    axes[0, 0].set_title(f"{csv_path.name}: probability of each AU, 0 to 1 (dashed: threshold; grey: no face)",
                         fontsize=9)
    fig.tight_layout(h_pad=0.1)
    return fig


# -- the whole run -----------------------------------------------------------------------------------------------


def run_predict(run: str | Path, inputs: list[str | Path], options: PredictOptions | None = None,
                progress: ProgressFn | None = None) -> dict:
    """Predict every video of ``inputs`` with a trained run; returns the summary (see docs/predict.md)."""
    options = options or PredictOptions()
    if options.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {options.batch}", "e.g. --batch 64")
    if options.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {options.workers}", "0 uses every CPU core")
    started = time.perf_counter()
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file", "give a folder for the predictions")
    videos = list_inputs(list(inputs), exclude=out)
    cores = os.cpu_count() or 1
    if min(options.workers or cores, len(videos)) > 1:
        _start_forkserver()  # it imports torch and mediapipe while this process loads the run
    spec = open_run(run, options.checkpoint, options.threshold)
    from aubench_cli.device import keep_host_memory

    keep_host_memory()  # for the videos predicted in this process (one worker)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out}: {exc.strerror}", "choose a writable --out") from None
    check_writable(out)  # a read-only --out: the CLI's one line now, not a failure per video

    tasks, kept, removed = [], [], []
    for v in videos:
        paths = output_paths(out, v.name)
        removed += remove_partials(paths)
        match = sidecar_match(spec, v.path)
        side = finished(paths, match)
        overlay_done = paths["overlay"].is_file() or paths["overlay_avi"].is_file()
        base = {"video": str(v.path), "name": v.name, "paths": {k: str(p) for k, p in paths.items()},
                "au_names": spec.au_names, "thresholds": spec.thresholds, "match": match,
                "checkpoint": str(spec.path), "which": spec.checkpoint, "arch": spec.arch, "epoch": spec.epoch,
                "min_confidence": spec.min_confidence, "batch": options.batch, "plot": options.plot,
                "overlay": options.overlay}
        if side is not None and (overlay_done or not options.overlay):
            kept.append({"name": v.name, "video": str(v.path), "status": "kept", "error": None,
                         "frames": side["frames"], "faces": side["faces"], "present": side["present"]})
            if options.plot and not paths["plot"].is_file():
                tasks.append({**base, "plot_only": True, "sidecar": kept.pop()})
            continue
        tasks.append(base)
    full = [t for t in tasks if not t.get("plot_only")]
    counts = {t["video"]: frame_count(Path(t["video"])) for t in full}
    tasks.sort(key=lambda t: -counts.get(t["video"], 0))  # longest first: no long video runs alone at the end
    workers = max(1, min(options.workers or cores, len(tasks) or 1))
    if progress:
        progress({"event": "start", "videos": len(tasks), "frames": int(sum(counts.values())), "kept": len(kept),
                  "workers": workers})
    work_started = time.perf_counter()
    reports = _run_tasks(tasks, workers, max(1, cores // workers), progress)
    work_seconds = time.perf_counter() - work_started
    reports = kept + reports
    by_name = {r["name"]: r for r in reports}
    ordered = [by_name[v.name] for v in videos if v.name in by_name]
    return _summary(spec, out, ordered, removed, workers, work_seconds, time.perf_counter() - started)


def _start_forkserver() -> None:
    ctx = prep._mp_context(FORKSERVER_PRELOAD)
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _init_predict_worker(events, threads: int) -> None:
    prep._init_worker(events, threads)
    import torch

    from aubench_cli.device import keep_host_memory

    torch.set_num_threads(threads)
    keep_host_memory()  # every batch of crops re-allocates the same activations


def _predict_task(task: dict) -> dict:
    return predict_video(task)


def _run_tasks(tasks: list[dict], workers: int, threads: int, progress: ProgressFn | None) -> list[dict]:
    def on_event(event: dict) -> None:
        if progress:
            progress(event)

    reports: list[dict] = []
    if not tasks:
        return reports
    if workers == 1:
        import cv2
        import torch

        from aubench_cli.data.align import quiet_native_stderr

        cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
        cv2.setNumThreads(1)
        torch.set_num_threads(threads)
        try:
            with quiet_native_stderr():
                for task in tasks:
                    report = predict_video(task, progress=on_event)
                    reports.append(report)
                    on_event({"event": "video", **_short(report)})
        finally:
            cv2.setNumThreads(cv_threads)
            torch.set_num_threads(torch_threads)
        return reports
    return prep.run_pool(tasks, workers, _predict_task, _failed, _short, on_event,
                         prep._mp_context(FORKSERVER_PRELOAD), _init_predict_worker, threads)


def _failed(task: dict, reason: str) -> dict:
    return {"name": task["name"], "video": task["video"], "status": "failed", "error": reason, "frames": 0,
            "faces": 0, "present": {au: 0 for au in task["au_names"]}}


def _short(report: dict) -> dict:
    return {k: report.get(k) for k in ("name", "video", "status", "error", "frames", "faces")}


def _summary(spec: RunSpec, out: Path, reports: list[dict], removed: list[str], workers: int, work_seconds: float,
             seconds: float) -> dict:
    ok = [r for r in reports if r["status"] != "failed"]
    frames = sum(r["frames"] for r in ok)
    faces = sum(r["faces"] for r in ok)
    now_frames = sum(r["frames"] for r in reports if r["status"] == "ok")
    present = {au: sum(r["present"].get(au, 0) for r in ok) for au in spec.au_names}
    return {
        "run": str(spec.run), "arch": spec.arch, "checkpoint": spec.checkpoint, "checkpoint_sha256": spec.sha256,
        "epoch": spec.epoch, "out": str(out), "au_names": spec.au_names, "threshold": spec.threshold,
        "thresholds": spec.thresholds,
        "precision": "fp32",  # training.inference.score_crops: float32 on the CPU
        "videos": {"listed": len(reports), "predicted_now": sum(r["status"] == "ok" for r in reports),
                   "kept": sum(r["status"] == "kept" for r in reports),
                   "failed": sum(r["status"] == "failed" for r in reports)},
        "frames": frames, "faces_found": faces, "faces_found_pct": round(100.0 * faces / frames, 2) if frames else 0.0,
        # share of the frames with a face where the AU is present at its threshold
        "presence": {au: (round(n / faces, 4) if faces else None) for au, n in present.items()},
        "per_video": [{k: r.get(k) for k in ("name", "video", "status", "frames", "faces")} for r in reports],
        "failures": [{"video": r["video"], "reason": r["error"]} for r in reports if r["status"] == "failed"],
        "partial_files_removed": removed,
        "workers": workers,
        "frames_per_second": round(now_frames / work_seconds, 1) if work_seconds > 0 and now_frames else None,
        "seconds": round(seconds, 2),
    }
