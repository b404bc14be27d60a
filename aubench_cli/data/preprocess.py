"""``aubench preprocess`` as a library: dataset folder in, aligned-face cache out, one video per task.

``run_preprocess`` lists the dataset (labels.py), reads every video's labels in the main process (small files;
the dataset's AU list and any label problem are known before work starts), assigns subject-exclusive splits,
opens the cache for writing (cache.py; finished videos are skipped, half-written ones redone), then hands the
remaining videos to ``workers`` processes (from a forkserver, each with its own mediapipe graphs and one OpenCV
thread). A worker decodes its video, aligns the face of every labelled frame (align.py) and writes the video's shard
atomically; a video that cannot be read is reported and skipped and the others go on. Frames and labels are
matched by frame key only: frames without labels, labels without frames and frames without a face are counted
and reported, never shifted. Progress goes to an optional callback; the result is a JSON-able summary.
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import queue as queue_mod
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aubench_cli import __version__
from aubench_cli.data.cache import (
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_FILE,
    CacheLock,
    VideoWriter,
    consolidate,
    live_entries,
    now,
    open_cache,
    prepare_cache,
    read_video,
    record_input,
    remove_video,
    restore_journal,
    verify_videos,
)
from aubench_cli.data.workers import die_with_parent, ignore_interrupts
from aubench_cli.data.fingerprint import changed, content_hash, fingerprint, stat_key
from aubench_cli.data.splits import CHOSEN_HERE, choose_split_seed, split_report, split_subjects
from aubench_cli.errors import UsageError, plural
from aubench_cli.data.labels import (
    IMAGE_EXTENSIONS,
    SPLITS,
    DatasetListing,
    LabelTable,
    VideoSource,
    dataset_au_names,
    describe_keys,
    frame_number,
    list_dataset,
    read_dataset_labels,
)

if TYPE_CHECKING:
    from aubench_cli.data.align import FaceResult

PAPER_SPLITS = (0.74, 0.11, 0.15)  # the paper's train / val / test shares (40.9K / 5.9K / 8.2K videos)
ProgressFn = Callable[[dict], None]


@dataclass
class PreprocessOptions:
    layout: str = "auto"
    threshold: float = 2.0  # DISFA-style intensities count as present at >= 2 (the field's convention, B level)
    workers: int = 0  # 0: one per CPU core
    split_seed: int | None = None  # None: the cache's recorded seed, else 0, else the seed filling every split closest to the shares
    splits: tuple[float, float, float] = PAPER_SPLITS
    overwrite: bool = False
    min_confidence: float = 0.5  # mediapipe's default for both detection and tracking
    label_scale: str = "auto"  # binary / intensity; auto: the layout's coding, or (generic) decided from the data
    strict: bool = False  # label values outside the scale, or an AU named twice, make the run exit non-zero


class VideoError(Exception):
    """A video (or frame folder) that cannot be decoded."""


# -- splits ------------------------------------------------------------------------------------------------------


def assign_splits(listing: DatasetListing, proportions, seed: int | None,
                  recorded: dict | None = None) -> tuple[dict[str, str], str]:
    """Subject -> split, from the manifest when it gives splits (checked subject-exclusive), else by seed (None:
    ``choose_split_seed``'s default, with the cache's ``recorded`` splits record)."""
    given = {v.split for v in listing.videos}
    if listing.videos and None not in given:
        subjects: dict[str, str] = {}
        for v in listing.videos:
            other = subjects.setdefault(v.subject, v.split)
            if other != v.split:
                raise UsageError(
                    f"manifest puts subject {v.subject!r} in both {other} and {v.split}",
                    "splits must be subject-exclusive: give all of a subject's videos one split",
                )
        return dict(sorted(subjects.items())), "manifest"
    names = [v.subject for v in listing.videos]
    if seed is None:
        seed = choose_split_seed(names, proportions, None, recorded)[0]
    return split_subjects(names, proportions, seed), "seed"


def parse_splits(text: str) -> tuple[float, float, float]:
    """``"0.74,0.11,0.15"`` -> proportions (train, val, test), checked."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0 or parts[0] <= 0:
        raise UsageError(
            f"--splits must be three non-negative shares train,val,test with train > 0, got {text!r}",
            "e.g. --splits 0.74,0.11,0.15",
        )
    total = sum(parts)
    return tuple(round(p / total, 6) for p in parts)  # type: ignore[return-value]


# -- frames ------------------------------------------------------------------------------------------------------


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    numbers = [frame_number(p) for p in files]
    if files and all(n is not None for n in numbers):
        return [p for _, p in sorted(zip(numbers, files), key=lambda t: (t[0], t[1].name))]
    return sorted(files)


def iter_frames(path: Path, wanted: Callable[[int, int], bool], stats: dict) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """(index, number, frame or None) for each frame of a video file or frame folder, in order.

    ``number`` is the frame number in an image's file name (the index for video files). Frames ``wanted``
    rejects are not decoded to pixels (``None``). ``stats`` receives ``container_frames`` and ``unreadable``, and
    for video files ``msec``: the container's timestamp of the frame just yielded, in milliseconds, and
    ``first_msec``: frame 0's (which OpenCV may report below 0: predict counts time from it).
    """
    import cv2

    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise VideoError(f"{path} holds no frame images")
        stats["unreadable"] = 0
        for index, file in enumerate(files):
            number = frame_number(file)
            number = index if number is None else number
            if not wanted(index, number):
                yield index, number, None
                continue
            frame = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if frame is None:
                stats["unreadable"] += 1
                continue
            yield index, number, frame
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"cannot open {path} (corrupt file or a format OpenCV cannot read)")
    try:
        stats["container_frames"] = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        index = 0
        while cap.grab():
            stats["msec"] = cap.get(cv2.CAP_PROP_POS_MSEC)
            if index == 0:
                stats["first_msec"] = stats["msec"]
            if wanted(index, index):
                ok, frame = cap.retrieve()
                if not ok:
                    stats["unreadable"] = stats.get("unreadable", 0) + 1
                    index += 1
                    continue
                yield index, index, frame
            else:
                yield index, index, None
            index += 1
    finally:
        cap.release()


# -- one video (runs in a worker) -------------------------------------------------------------------------------

_aligner = None
_progress_queue = None


def _init_worker(progress_queue, threads: int = 1) -> None:
    """Pool worker set-up: one thread for OpenCV and the math libraries (processes give the parallelism, and
    oversubscribed threads slow all of them), progress reported through the queue."""
    global _progress_queue
    ignore_interrupts()  # Ctrl-C is the command's: it kills its workers (data/workers.py)
    die_with_parent()  # and a command killed outright takes them with it
    _silence_native_stderr()  # a pool worker: nothing of ours goes to stderr, mediapipe's chatter does
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging: warnings and up only
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2

    cv2.setNumThreads(threads)
    _progress_queue = progress_queue


def _silence_native_stderr() -> None:
    if os.environ.get("AUBENCH_DEBUG", "") in ("", "0"):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)


def _get_aligner(min_confidence: float):
    global _aligner
    if _aligner is None or _aligner.min_confidence != min_confidence:
        from aubench_cli.data.align import FaceAligner

        _aligner = FaceAligner(min_confidence=min_confidence)
    return _aligner


def _every_frame(index: int, number: int) -> bool:
    return True


def align_video(path: Path, wanted: Callable[[int, int], bool] | None = None, stats: dict | None = None, *,
                min_confidence: float = 0.5, side: str | None = None,
                ) -> Iterator[tuple[int, int, np.ndarray | None, FaceResult | None]]:
    """The per-video frame loop of ``preprocess`` and ``predict``: (index, number, frame, face) for each frame.

    Decodes the frames in order (``iter_frames``; frames ``wanted`` rejects come as ``None`` and are not
    aligned) and aligns each one with this process's aligner, reset for the video (``side``: which face of a
    two-person video). ``face`` is None where no face is found. Both commands go through this one generator, so
    a video predicted gets exactly the crops it would have in a cache.
    """
    aligner = _get_aligner(min_confidence)
    aligner.reset(side=side)
    for index, number, frame in iter_frames(path, wanted or _every_frame, {} if stats is None else stats):
        yield index, number, frame, None if frame is None else aligner.process(frame)


def process_video(task: dict, progress: ProgressFn | None = None) -> dict:
    """Align every labelled frame of one video and write its shard; returns the video's report (never raises
    for a bad video: the report says ``failed`` and why)."""
    fields = task["video"]
    video = VideoSource(**{**fields, "path": Path(fields["path"]), "label_path": Path(fields["label_path"])})
    table = LabelTable(**task["labels"])
    report: dict[str, Any] = {
        "video": video.id, "subject": video.subject, "path": str(video.path), "status": "ok", "error": None,
        "frames_read": 0, "frames_labelled": 0, "faces": 0, "no_face": 0, "detected": 0, "unlabelled_frames": 0,
        "label_rows": int(len(table.frames)), "labels_without_frame": 0, "mismatches": list(table.issues),
        "identity_switches": 0, "implausible": 0, "track_corrections": 0,
    }
    emit = progress if progress is not None else _queue_progress
    start, cpu_start = time.perf_counter(), time.process_time()
    writer = None
    try:
        frame_key = _frame_key(task.get("layout", "generic"), video.path, table)
        key_is_number = table.key == "number"
        row_of = {int(k): i for i, k in enumerate(table.frames)}
        writer = VideoWriter(Path(task["cache"]), video.id, len(table.au_names), owner=task.get("owner"))
        stats: dict[str, Any] = {}
        seen_keys: list[int] = []
        unlabelled: list[int] = []
        pending = 0

        def wanted(index: int, number: int) -> bool:
            return frame_key(index, number) in row_of

        aligner = _get_aligner(task["min_confidence"])  # the one align_video uses: its counters are read below
        for index, number, frame, face in align_video(video.path, wanted, stats, min_confidence=task["min_confidence"],
                                                      side=task.get("face_side")):
            report["frames_read"] += 1
            key = frame_key(index, number)
            if frame is None:
                unlabelled.append(key)
                continue
            seen_keys.append(key)
            report["frames_labelled"] += 1
            if face is None:
                report["no_face"] += 0 if getattr(aligner, "rejected", False) else 1  # else counted as implausible
            else:
                # the frame's own key: its index, or (BP4D) the number in the image's name
                writer.add(face.crop, table.values[row_of[key]], key, face.landmarks, face.transform, face.detected,
                           key=key)
                report["faces"] += 1
                report["detected"] += int(face.detected)
            pending += 1
            if pending >= 32:
                emit({"event": "frames", "n": pending})
                pending = 0
        if pending:
            emit({"event": "frames", "n": pending})
        if report["frames_read"] == 0:
            raise VideoError(f"no frame could be decoded from {video.path} (corrupt file or unsupported codec)")
        report["identity_switches"] = int(getattr(aligner, "identity_switches", 0))
        report["implausible"] = int(getattr(aligner, "implausible", 0))
        report["track_corrections"] = int(getattr(aligner, "track_corrections", 0))
        all_keys = np.asarray(seen_keys + unlabelled, dtype=np.int64)
        _report_mismatches(report, table, all_keys, np.asarray(unlabelled, dtype=np.int64), stats, key_is_number)
        report["seconds"] = round(time.perf_counter() - start, 3)
        # CPU time of this process (mediapipe's graph threads included), which a busy machine does not inflate
        report["cpu_seconds"] = round(time.process_time() - cpu_start, 3)
        report.update(_rerun_facts(seen_keys, unlabelled, stats))
        writer.commit({**report, "label_key": table.key, "au_names": table.au_names}, _input_of(task, video))
        writer = None
    except VideoError as exc:
        report.update(status="failed", error=str(exc))
    except OSError as exc:
        if fatal_write_error(exc):  # a full disk or a read-only cache fails every video: stop the run
            raise
        report.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a decoder or mediapipe failure on one video must not stop the others
        report.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.abort()
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report


FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def fatal_write_error(exc: BaseException) -> bool:
    """An OSError no other video would escape (disk full, quota, read-only file system): the run stops on it."""
    return isinstance(exc, OSError) and exc.errno in FATAL_ERRNOS


def _frame_key(layout: str, path: Path, table: LabelTable) -> Callable[[int, int], int]:
    """How a decoded frame finds its label row: (index in the video, number in its file name) -> label key.

    Video files: the index. Frame folders: BP4D labels carry the image numbers themselves; Aff-Wild2 and DISFA
    number images from 1 (``00001.jpg`` is row 0), and a folder with gaps (frames where ABAW's own cropping
    found no face) must not shift the rows after the gap, so the number is used, not the position. Generic
    labels count frames by position, which is only safe when the numbered images have no gaps.
    """
    if table.key == "number":
        return lambda index, number: number
    if not path.is_dir():
        return lambda index, number: index
    numbers = [frame_number(p) for p in _image_files(path)]
    if not numbers or any(n is None for n in numbers):
        return lambda index, number: index
    if layout in ("affwild2", "disfa"):
        return lambda index, number: number - 1
    gaps = [a for a, b in zip(numbers, numbers[1:]) if b != a + 1]
    if gaps:
        raise VideoError(
            f"the images in {path} skip frame numbers (after {gaps[0]}); generic labels index frames by position, "
            "so every label after the gap would shift: number the images without gaps, or use a video file"
        )
    return lambda index, number: index


def _report_mismatches(report: dict, table: LabelTable, frame_keys: np.ndarray, unlabelled: np.ndarray, stats: dict,
                       by_number: bool) -> None:
    """Write down every way frames and labels disagree (the frames that match are kept either way)."""
    label_keys = table.frames
    orphans = np.setdiff1d(label_keys, frame_keys)
    report["labels_without_frame"] = int(len(orphans))
    report["unlabelled_frames"] = int(len(unlabelled))
    if len(orphans):
        report["mismatches"].append(
            f"{len(orphans)} label rows have no frame ({describe_keys(table, orphans)}; the video has "
            f"{report['frames_read']} frames)"
        )
    if len(unlabelled):
        report["mismatches"].append(
            f"{len(unlabelled)} frames have no label row ({describe_keys(table, unlabelled, name_file=False)}"
            f"{' in ' + table.source if table.source else ''}): not used"
        )
    container = stats.get("container_frames")
    if container and container != report["frames_read"]:
        report["mismatches"].append(
            f"the container says {container} frames but {report['frames_read']} were decoded (truncated or damaged "
            "file?): the missing frames are not used")
    if stats.get("unreadable"):
        report["mismatches"].append(f"{stats['unreadable']} frames could not be decoded: not used")


def _queue_progress(event: dict) -> None:
    if _progress_queue is not None:
        _progress_queue.put(event)


def _worker_task(task: dict) -> dict:
    return process_video(task)


# -- the whole run -----------------------------------------------------------------------------------------------


def _settings(options: PreprocessOptions) -> dict:
    from aubench_cli.data.align import CROP_PIPELINE_VERSION, CROP_SIZE, LANDMARK_IDS, LANDMARK_NAMES, TEMPLATE

    try:
        from importlib.metadata import version

        mp_version = version("mediapipe")
    except Exception:  # noqa: BLE001 - a missing distribution only loses a label in the header
        mp_version = "unknown"
    return {
        "threshold": float(options.threshold),
        "crop_size": CROP_SIZE,
        "grayscale": True,
        "landmark_ids": list(LANDMARK_IDS),
        "landmark_names": list(LANDMARK_NAMES),
        "template": TEMPLATE.tolist(),
        "aligner": f"mediapipe {mp_version}: BlazeFace detection, FaceMesh tracking",
        "min_confidence": float(options.min_confidence),
        "crop_pipeline": CROP_PIPELINE_VERSION,
    }


def _coded_per_subject(videos: list, tables: dict, au_names: list[str]) -> dict[str, tuple[set, set]]:
    """Subject -> (the AUs its label files mark present in some frame, those they mark absent in some frame)."""
    coded: dict[str, tuple[set, set]] = {}
    for v in videos:
        _code(coded, v.subject, tables[v.id].values, au_names)
    return coded


def _coded_in_cache(cache: Any) -> dict[str, tuple[set, set]]:
    """``_coded_per_subject`` on the frames a cache holds (a frame without a face is not there)."""
    coded: dict[str, tuple[set, set]] = {}
    for start, count, subject in zip(cache.video_offsets[:-1], cache.video_counts, cache.video_subject):
        _code(coded, subject, np.asarray(cache.labels[start:start + count]), cache.au_names)
    return coded


def _code(coded: dict[str, tuple[set, set]], subject: str, values: np.ndarray, au_names: list[str]) -> None:
    """Add to ``subject``'s sets the AUs ``values`` (frames x AUs: 1, 0, -1 unknown) mark present, and absent."""
    pos, neg = coded.setdefault(subject, (set(), set()))
    pos.update(au for au, hit in zip(au_names, (values == 1).any(0)) if hit)
    neg.update(au for au, hit in zip(au_names, (values == 0).any(0)) if hit)


def run_preprocess(input_dir: str | Path, out: str | Path, options: PreprocessOptions | None = None,
                   progress: ProgressFn | None = None) -> dict:
    """Preprocess a dataset folder into a cache; returns the summary (see docs/preprocessing.md)."""
    options = options or PreprocessOptions()
    if options.threshold <= 0:
        raise UsageError(f"--threshold must be above 0, got {options.threshold}", "DISFA's convention is 2")
    started = time.perf_counter()
    input_dir, out = Path(input_dir), Path(out)
    listing = list_dataset(input_dir, options.layout)
    labels = read_dataset_labels(listing.layout, listing.videos, options.threshold, options.label_scale, input_dir)
    tables, unreadable = labels.tables, labels.skipped
    skipped = list(listing.skipped) + unreadable
    videos = [v for v in listing.videos if v.id in tables]
    if not videos:
        reasons = "; ".join(f"{s['video']}: {s['reason']}" for s in skipped[:3])
        raise UsageError(f"no video in {input_dir} has usable labels", reasons)
    au_names = dataset_au_names(tables.values())
    if not au_names:
        raise UsageError(f"no AU in {input_dir} has a single known label", "check the label files")
    tables = {k: t.reorder(au_names) for k, t in tables.items()}
    usable = DatasetListing(listing.layout, listing.root, videos)
    recorded = _recorded_splits(out) if not options.overwrite else None
    seed, seed_from, seed_note = choose_split_seed([v.subject for v in videos], options.splits, options.split_seed,
                                                   recorded, _coded_per_subject(videos, tables, au_names))
    subjects, split_source = assign_splits(usable, options.splits, seed)
    if split_source != "seed":
        seed_from, seed_note = "given", None

    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": now(),
        "updated": now(),
        "status": "incomplete",
        "source": {"path": str(input_dir.resolve()), "layout": listing.layout},
        "au_names": au_names,
        "settings": {**_settings(options), "label_scale": labels.scale["scale"]},
        "splits": {"source": split_source, "seed": seed, "seed_from": seed_from, "proportions": list(options.splits)},
        "subjects": subjects,
    }
    out.mkdir(parents=True, exist_ok=True)  # an OSError here is the CLI's one line (errors.from_os_error)
    with CacheLock(out):
        restored = [] if options.overwrite or not (out / HEADER_FILE).is_file() else restore_journal(out)
        done, removed = prepare_cache(out, header, options.overwrite)
        damaged = verify_videos(out)  # sizes, then every video's bytes against its checksum
        for vid in damaged:
            remove_video(out, vid)
        done -= set(damaged)
        # the video's content hash is taken by the worker that reads it anyway; labels are hashed when compared
        inputs = {v.id: {"video": {"stat": stat_key(v.path), "hash": None}, "labels": None} for v in videos}
        todo, rerun = _plan_rerun(out, videos, tables, inputs)
        _note_repairs(rerun, damaged, restored, {v.id for v in videos})
        # longest first, so one long video does not run alone at the end
        todo.sort(key=lambda v: -len(tables[v.id].frames))
        tasks = [
            {
                "video": {**asdict(v), "path": str(v.path), "label_path": str(v.label_path)},
                "labels": {**asdict(tables[v.id])},
                "cache": str(out),
                "layout": listing.layout,
                "face_side": _face_side(listing.layout, v),
                "min_confidence": options.min_confidence,
                "input": inputs[v.id],
                "owner": os.getpid(),  # a worker commits only while this process holds the cache's lock
            }
            for v in todo
        ]
        workers = options.workers or os.cpu_count() or 1
        workers = max(1, min(workers, len(tasks)))
        already = len(done) - len(rerun["redone"]) - len(rerun["realigned"]) - len(rerun["removed"])
        if progress:
            progress({"event": "start", "videos": len(tasks), "frames": int(sum(len(tables[v.id].frames) for v in todo)),
                      "already_done": already, "workers": workers, "notes": rerun["notes"]})
        work_started = time.perf_counter()
        reports = _run_tasks(tasks, workers, progress)
        work_seconds = time.perf_counter() - work_started
        failures = [{"video": r["video"], "reason": r["error"]} for r in reports if r["status"] != "ok"]
        consolidate(out, header)
        cache = open_cache(out)
        if split_source == "seed" and seed_from in CHOSEN_HERE:
            # chosen here on the label files: checked again on the frames kept (those with a face found)
            again = choose_split_seed([v.subject for v in videos], options.splits, None, None, _coded_in_cache(cache))
            if again[0] != seed:
                seed, seed_from = again[0], again[1]
                seed_note = f"on the frames with a face found, {again[2]}"
                subjects, _ = assign_splits(usable, options.splits, seed)
                header = {**header, "subjects": subjects,
                          "splits": {**header["splits"], "seed": seed, "seed_from": seed_from}}
                consolidate(out, header)
                cache = open_cache(out)
        summary = _summary(cache, listing, reports, failures, skipped, removed, already, workers, work_seconds)
        realised, split_warnings = split_report(subjects, options.splits, split_source)
        for split, info in realised.items():
            summary["splits"][split].update(share=info["share"], wanted=info["wanted"])
        summary["videos"].update(labels_refreshed=len(rerun["refreshed"]), redone=len(rerun["redone"]))
        summary["videos"]["repaired"] = len(rerun["repaired"])
        summary["reruns"] = {k: rerun[k] for k in ("refreshed", "redone", "realigned", "touched", "removed",
                                                  "repaired", "journal_restored")}
        summary["split_warnings"] = split_warnings
        summary["split_seed"] = {"seed": seed, "from": seed_from} if split_source == "seed" else None
        summary["notes"] = rerun["notes"] + ([seed_note] if seed_note else []) + split_warnings
        summary.update(label_report(labels, options.strict))
        summary.update(face_report(cache))
        summary["seconds"] = round(time.perf_counter() - started, 2)
        header = {**header, **{k: cache.header[k] for k in ("created",)}, "updated": now(),
                  "status": "complete" if not failures else f"incomplete: {plural(len(failures), 'video')} failed",
                  "summary": {k: summary[k] for k in ("videos", "frames_read", "faces_found", "failures", "skipped")}}
        consolidate(out, header)
    return summary


def _recorded_splits(out: Path) -> dict | None:
    """The ``splits`` record of the cache at ``out`` (None when there is none, or it cannot be read): a rerun
    without ``--split-seed`` keeps its seed (``choose_split_seed``)."""
    try:
        record = json.loads((out / HEADER_FILE).read_text()).get("splits")
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) else None


# -- reruns: what changed since the cache was written ----------------------------------------------------------


def _input_of(task: dict, video: VideoSource) -> dict | None:
    """The fingerprint stored with a video: the one planned in the main process, with the video's content hash
    (taken here, in the worker, where the file is being read anyway) when the plan did not need it."""
    planned = task.get("input")
    if planned is None:
        return None
    if planned["video"].get("hash") is None:
        planned = {**planned, "video": {**planned["video"], "hash": content_hash(video.path)}}
    return planned


def _runs(keys) -> list[list[int]]:
    """Sorted unique ints as [start, stop) runs: a video's frame keys are one or a few runs."""
    keys = np.unique(np.asarray(keys, dtype=np.int64))
    if not len(keys):
        return []
    cuts = np.flatnonzero(np.diff(keys) != 1) + 1
    return [[int(r[0]), int(r[-1]) + 1] for r in np.split(keys, cuts)]


def _from_runs(runs) -> np.ndarray:
    if not runs:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in runs])


def _rerun_facts(aligned: list[int], unlabelled: list[int], stats: dict) -> dict:
    """What a label refresh needs later: the keys of the decoded frames, of those that were aligned (they had
    labels), and the decoder's counts, so mismatches can be recomputed without decoding again."""
    return {"frame_keys": _runs(list(aligned) + list(unlabelled)), "aligned_keys": _runs(aligned),
            "container_frames": stats.get("container_frames"), "unreadable": int(stats.get("unreadable", 0) or 0)}


def _plan_rerun(out: Path, videos: list[VideoSource], tables: dict[str, LabelTable], inputs: dict[str, dict]
                ) -> tuple[list[VideoSource], dict]:
    """Compare each finished video's stored fingerprint with its inputs now. A changed video is removed and
    redone; changed labels are refreshed in place of the old rows (no alignment), unless they label decoded
    frames that were never aligned, then the video is redone; same content under new times only records the new
    times. Videos no longer in the dataset are removed. Returns the videos to align and what was done."""
    entries = live_entries(out)
    by_id = {v.id: v for v in videos}
    todo: list[VideoSource] = []
    rerun: dict[str, Any] = {"refreshed": [], "redone": [], "realigned": [], "touched": [], "removed": [], "notes": []}
    cache = None
    for vid in [v for v in entries if v not in by_id]:
        remove_video(out, vid)
        rerun["removed"].append(vid)
    for v in videos:
        entry = entries.get(v.id)
        if entry is None:
            inputs[v.id]["labels"] = fingerprint(v.label_path)
            todo.append(v)
            continue
        old = entry.get("input")
        if not old:  # written without fingerprints: nothing to compare with, kept as it is
            continue
        video_changed, video_fp = changed(old.get("video"), v.path)
        labels_changed, labels_fp = changed(old.get("labels"), v.label_path)
        now_fp = {"video": video_fp, "labels": labels_fp}
        inputs[v.id] = now_fp
        if video_changed:
            remove_video(out, v.id)
            rerun["redone"].append(v.id)
            todo.append(v)
        elif labels_changed:
            if cache is None:
                cache = open_cache(out)
            if _refresh_labels(out, cache, v, tables[v.id], now_fp):
                rerun["refreshed"].append(v.id)
            else:
                remove_video(out, v.id)
                rerun["realigned"].append(v.id)
                todo.append(v)
        elif now_fp != old:
            record_input(out, v.id, now_fp)
            rerun["touched"].append(v.id)

    notes = rerun["notes"]
    if rerun["redone"]:
        notes.append(f"video content changed for {plural(len(rerun['redone']), 'video')}: redone")
    if rerun["refreshed"]:
        notes.append(f"labels changed for {plural(len(rerun['refreshed']), 'video')}: refreshed")
    if rerun["realigned"]:
        notes.append(f"labels of {plural(len(rerun['realigned']), 'video')} now cover frames never aligned: re-aligned")
    if rerun["touched"]:
        notes.append(f"{plural(len(rerun['touched']), 'video')} with new file times but the same content: kept")
    if rerun["removed"]:
        notes.append(f"{plural(len(rerun['removed']), 'video')} no longer in the dataset (or without usable labels): "
                     "removed from the cache")
    return todo, rerun


def _note_repairs(rerun: dict, damaged: dict[str, str], restored: list[str], in_dataset: set[str]) -> None:
    """What the checks before the run found and did: damaged or missing videos (redone), lost journal lines."""
    redone = [v for v in damaged if v in in_dataset]
    rerun["repaired"] = redone
    rerun["journal_restored"] = restored
    notes = []
    if redone:
        notes.append(f"{len(redone)} video{'s' if len(redone) != 1 else ''} damaged or missing: redone "
                     f"({', '.join(redone[:5])}{', ...' if len(redone) > 5 else ''})")
    gone = len(damaged) - len(redone)
    if gone:
        notes.append(f"{gone} damaged video{'s' if gone != 1 else ''} no longer in the dataset: removed")
    if restored:
        notes.append(f"the journal had lost {len(restored)} of the header's videos: restored from the header (their "
                     "bytes match their checksums; their input fingerprints are lost, so a later change of their "
                     "files is not seen: --overwrite redoes everything)")
    rerun["notes"][:0] = notes


def _refresh_labels(out: Path, cache, video: VideoSource, table: LabelTable, fp: dict) -> bool:
    """Rewrite one video's rows with its new labels (the crops are copied, nothing is aligned); False when the
    new labels need frames that were decoded but never aligned (the caller redoes the video then)."""
    meta = cache.video_meta.get(video.id, {})
    if "frame_keys" not in meta or meta.get("label_key", table.key) != table.key:
        return False
    decoded, aligned = _from_runs(meta["frame_keys"]), _from_runs(meta["aligned_keys"])
    wanted = np.intersect1d(table.frames, decoded)
    if len(np.setdiff1d(wanted, aligned)):
        return False
    rows = read_video(cache, video.id)
    values, found = table.lookup(rows["key"])
    writer = VideoWriter(out, video.id, len(table.au_names), cache.images.size)
    try:
        writer.add_block(rows["images"][found], values[found], rows["frame"][found], rows["key"][found],
                         rows["detected"][found], rows["landmarks"][found], rows["transform"][found])
        report = {k: v for k, v in meta.items() if k not in ("n", "checksum", "written")}
        report.update(frames_labelled=int(len(wanted)), faces=int(found.sum()),
                      no_face=int(len(wanted) - found.sum()), detected=int(rows["detected"][found].sum()),
                      label_rows=int(len(table.frames)), mismatches=list(table.issues), labels_refreshed=now(),
                      aligned_keys=_runs(wanted))
        unlabelled = np.setdiff1d(decoded, table.frames)
        stats = {"container_frames": meta.get("container_frames"), "unreadable": meta.get("unreadable", 0)}
        _report_mismatches(report, table, decoded, unlabelled, stats, table.key == "number")
        writer.commit(report, fp)
    except BaseException:
        writer.abort()
        raise
    return True


# Videos where at least this share of the labelled frames had no face are listed in the summary, worst first.
FACELESS_SHARE = 0.05


def label_report(labels, strict: bool = False) -> dict:
    """The summary's label part: the scale and its evidence, values outside it (the first few with file, line and
    column, then the count), AUs named twice, and whether ``--strict`` fails the run for them."""
    return {
        "label_scale": labels.scale,
        "label_values_outside_scale": labels.outside_scale,
        "duplicate_au_columns": labels.duplicate_columns,
        "label_problems": labels.problems,
        "strict_failed": bool(strict and labels.problems),
    }


def face_report(cache) -> dict:
    """The summary's face part: videos with many frames without a face (count and share of their labelled
    frames, worst first), identity switches, implausible alignments and track corrections, from every video in the
    cache."""
    metas = list(cache.video_meta.values())
    faceless = []
    for m in metas:
        labelled, missing = int(m.get("frames_labelled", 0)), int(m.get("no_face", 0))
        if labelled and missing / labelled >= FACELESS_SHARE:
            faceless.append({"video": m["video"], "no_face": missing, "frames_labelled": labelled,
                             "pct": round(100.0 * missing / labelled, 1)})
    faceless.sort(key=lambda f: (-f["pct"], -f["no_face"], f["video"]))
    return {
        "videos_with_faceless_frames": faceless,
        "no_face_frames": sum(int(m.get("no_face", 0)) for m in metas),
        "identity_switches": sum(int(m.get("identity_switches", 0)) for m in metas),
        "videos_with_identity_switches": sorted(m["video"] for m in metas if int(m.get("identity_switches", 0))),
        "implausible_alignments": sum(int(m.get("implausible", 0)) for m in metas),
        # followed frames whose landmarks failed the check against the face and were aligned afresh (jumps, cuts)
        "track_corrections": sum(int(m.get("track_corrections", 0)) for m in metas),
    }


def _face_side(layout: str, video: VideoSource) -> str | None:
    """Aff-Wild2 labels the two people of one video in ``<video>_left.txt`` and ``<video>_right.txt``."""
    if layout == "affwild2":
        for side in ("left", "right"):
            if video.label_path.stem.endswith(f"_{side}"):
                return side
    return None


def _run_tasks(tasks: list[dict], workers: int, progress: ProgressFn | None) -> list[dict]:
    def on_event(event: dict) -> None:
        if progress:
            progress(event)

    reports: list[dict] = []
    if workers == 1:
        # in-process: no spawn cost, and one worker is what a small job or a debugger wants
        import cv2

        from aubench_cli.data.align import quiet_native_stderr

        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # OpenCV's threads only add overhead on 96x96 and 256x256 warps
        # mediapipe logs from its own threads at any time; callers that draw on stderr meanwhile (a progress
        # bar) write to a duplicate of it (see commands/preprocess.py)
        try:
            with quiet_native_stderr():
                for task in tasks:
                    report = process_video(task, progress=on_event)
                    reports.append(report)
                    on_event({"event": "video", **_short(report)})
        finally:
            cv2.setNumThreads(threads)
        return reports
    return run_pool(tasks, workers, _worker_task, _failed, _short, on_event, _mp_context(), _init_worker, 1)


def run_pool(tasks: list[dict], workers: int, work: Callable[[dict], dict], failed: Callable[[dict, str], dict],
             short: Callable[[dict], dict], on_event: Callable[[dict], None], ctx, initializer: Callable,
             threads: int) -> list[dict]:
    """Run ``work`` on every task in ``workers`` processes of ``ctx`` (started by ``initializer(events,
    threads)``), relaying their events and one ``video`` event per finished task; a task whose worker died or
    raised gets ``failed(task, reason)``, the others go on. Shared by ``preprocess`` and ``predict``."""
    events = ctx.Queue()
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=initializer,
                                   initargs=(events, threads))
    reports: list[dict] = []
    try:
        futures = {executor.submit(work, t): t for t in tasks}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(events, on_event)
            for fut in finished:
                task = futures[fut]
                try:
                    report = fut.result()
                except BrokenProcessPool:
                    report = failed(task, "a worker process died while processing it (re-run to resume)")
                except OSError as exc:
                    if fatal_write_error(exc):
                        raise
                    report = failed(task, f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # noqa: BLE001 - reported per video
                    report = failed(task, f"{type(exc).__name__}: {exc}")
                reports.append(report)
                on_event({"event": "video", **short(report)})
        _drain(events, on_event)
    except BaseException:
        _kill_workers(executor)  # they ignore Ctrl-C; a worker killed mid-video leaves nothing visible
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return reports


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError, AttributeError):
            pass


# Imported once by the forkserver; a wrong name here is swallowed by multiprocessing (every worker would then
# re-import mediapipe itself), so tests import each of them.
FORKSERVER_PRELOAD = ["aubench_cli.data.preprocess", "aubench_cli.data.align", "cv2",
                      "aubench_cli.data.mp_import"]  # mediapipe, without matplotlib (data/mp_import.py)


def _mp_context(preload: list[str] | None = None):
    """Worker processes start from a forkserver that has imported mediapipe and OpenCV once (a fork of it costs
    milliseconds; a spawned worker pays about a second of imports each); plain spawn where there is no
    forkserver (macOS, Windows) or when AUBENCH_MP_START=spawn. Never a bare fork of this process: it may hold
    threads (a progress bar, mediapipe graphs) that a fork would copy in a broken state. ``preload``: the modules
    the forkserver imports (``FORKSERVER_PRELOAD`` by default; predict adds torch and its own module)."""
    method = os.environ.get("AUBENCH_MP_START", "forkserver")
    if method not in mp.get_all_start_methods():
        method = "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":  # data.workers first: the forkserver's children die with it and ignore Ctrl-C
        ctx.set_forkserver_preload(["aubench_cli.data.workers", *(preload or FORKSERVER_PRELOAD)])
        _start_forkserver()
    return ctx


def _start_forkserver() -> None:
    """Start the forkserver now, with SIGINT blocked while it is spawned (as multiprocessing does for its
    resource tracker): the new interpreter inherits the blocked signal, so a Ctrl-C while it starts up (before
    data.workers makes it ignore SIGINT) cannot print its import traceback beside the command's one line. A
    Ctrl-C meanwhile stays pending here and is delivered when the mask is lifted."""
    import signal
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()  # first: it blocks and then unblocks SIGINT around its own spawn
    blocked = hasattr(signal, "pthread_sigmask")
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _drain(events, on_event: Callable[[dict], None]) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue_mod.Empty:
            return


def _failed(task: dict, reason: str) -> dict:
    v = task["video"]
    return {"video": v["id"], "subject": v["subject"], "path": v["path"], "status": "failed", "error": reason,
            "frames_read": 0, "frames_labelled": 0, "faces": 0, "no_face": 0, "detected": 0, "mismatches": []}


def _short(report: dict) -> dict:
    return {k: report[k] for k in ("video", "status", "error", "frames_read", "faces")}


def positive_rates(labels: np.ndarray, au_names: list[str]) -> dict[str, float | None]:
    """Share of positives among the known labels of each AU (None when no label is known)."""
    out = {}
    for j, name in enumerate(au_names):
        col = labels[:, j]
        known = int((col >= 0).sum())
        out[name] = round(float((col == 1).sum()) / known, 4) if known else None
    return out


def _summary(cache, listing: DatasetListing, reports: list[dict], failures: list[dict], skipped: list[dict],
             removed: list[str], already_done: int, workers: int, work_seconds: float) -> dict:
    metas = list(cache.video_meta.values())
    frames_read = sum(int(m.get("frames_read", 0)) for m in metas)
    labelled = sum(int(m.get("frames_labelled", 0)) for m in metas)
    faces = sum(int(m.get("faces", 0)) for m in metas)
    run_frames = sum(int(r.get("frames_read", 0)) for r in reports)
    splits = {}
    for split in SPLITS:
        idx = cache.indices(split)
        subjects = sorted({s for s, sp in zip(cache.subjects, cache.subject_split) if sp == split})
        splits[split] = {
            "subjects": len(subjects),
            "videos": len({cache.videos[i] for i in np.unique(cache.video_index[idx])}),
            "frames": int(len(idx)),
            "positive_rate": positive_rates(cache.labels[idx], cache.au_names),
        }
    mismatches = [{"video": m["video"], "issues": m["mismatches"]} for m in metas if m.get("mismatches")]
    no_face_videos = [m["video"] for m in metas if int(m.get("faces", 0)) == 0]
    return {
        "cache": str(cache.path),
        "input": str(listing.root),
        "layout": listing.layout,
        "au_names": cache.au_names,
        "videos": {
            "listed": len(listing.videos) + sum(not s["reason"].startswith("labels without") for s in listing.skipped),
            "in_cache": len(metas),
            "processed_now": sum(r["status"] == "ok" for r in reports),
            "already_done": already_done,
            "failed": len(failures),
            "skipped": len(skipped),
        },
        "frames_read": frames_read,
        "frames_labelled": labelled,
        "faces_found": faces,
        "faces_found_pct": round(100.0 * faces / labelled, 2) if labelled else 0.0,
        "failures": failures,
        "skipped": skipped,
        "mismatches": mismatches,
        "videos_without_face": no_face_videos,
        "partial_shards_removed": removed,
        "splits": splits,
        "workers": workers,
        "frames_per_second": round(run_frames / work_seconds, 1) if work_seconds > 0 and run_frames else None,
    }
