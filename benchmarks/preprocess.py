"""Benchmark of ``aubench preprocess``: decode ceiling, per-frame cost breakdown, frames/s with 1 and N workers.

Builds a dataset of 640x480 videos of 300 frames (``aubench synth``'s renderer when present: one synthetic
video, copied as the other videos under other subject names, since only preprocessing is timed; otherwise the
astronaut photo turning and moving), then measures

* decode only: ``cv2.VideoCapture.read`` over one video (the ceiling no preprocessing can pass);
* the per-frame path on one video, split into decode, landmarks (BlazeFace/FaceMesh on the ROI) and the crop
  warp, in milliseconds per frame;
* the check of followed landmarks against the face (crop pipeline 3): ``FaceAligner.process`` per frame with the
  check and with it switched off (interleaved, CPU ms), the check's own arithmetic, and the share of frames it
  corrected;
* ``run_preprocess`` end to end with 1 worker (in-process) and with every core (spawned workers; includes
  their start-up, as a user sees it), in frames/s;
* a random 96-frame gather from the resulting cache (what a trainer does per batch).

``--motion jumpy`` renders the synthetic video with a new head pose every frame (``aubench synth --motion
jumpy``: shot cuts, sampled frames), where most followed frames fail the check and are aligned afresh: what the
check costs at worst. The default, smooth, is the continuous footage the >= 400 frames/s target is about.

Usage: ``python benchmarks/preprocess.py [--videos 4] [--frames 300] [--workers N] [--motion smooth|jumpy]
[--json]``. Figures go to docs/performance.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aubench_cli.data import align  # noqa: E402
from aubench_cli.data.align import (FaceAligner, alignment_transform, crop_signature, landmarks_moved,  # noqa: E402
                                    quiet_native_stderr, warp_crop)
from aubench_cli.data.cache import open_cache  # noqa: E402
from aubench_cli.data.preprocess import PreprocessOptions, run_preprocess  # noqa: E402


def astronaut_video(path: Path, frames: int, size=(640, 480)) -> None:
    from skimage import data

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for i in range(frames):
        m = cv2.getRotationMatrix2D((224.0, 130.0), 12 * np.sin(i / 25), 1.0 + 0.1 * np.cos(i / 40))
        m[:, 2] += np.array([size[0] / 2 - 224 + 20 * np.sin(i / 30), size[1] / 2 - 130])
        writer.write(cv2.warpAffine(photo, m, size, borderMode=cv2.BORDER_REPLICATE))
    writer.release()


def make_dataset(root: Path, videos: int, frames: int, motion: str = "smooth") -> str:
    """A generic-layout dataset of ``videos`` copies of one 640x480 video; returns where the video came from."""
    (root / "videos").mkdir(parents=True)
    (root / "labels").mkdir()
    first = root / "videos" / "s00_v1.avi"
    source = "astronaut video (own)"
    try:
        from aubench_cli.data.synth import SynthConfig, synthesize

        tmp = root.parent / "synth"
        synthesize(tmp, SynthConfig(subjects=1, videos_per_subject=1, frames=frames, layout="generic", seed=0,
                                    motion=motion))
        manifest = (tmp / "manifest.csv").read_text().splitlines()
        rel = manifest[1].split(",")[0]
        shutil.copy(tmp / rel, first)
        shutil.copy(tmp / "labels" / f"{Path(rel).stem}.csv", root / "labels" / "s00_v1.csv")
        source = f"aubench synth (generic layout, 640x480, {motion} motion)"
    except ImportError:
        astronaut_video(first, frames)
        rows = ["frame,AU01,AU12"] + [f"{i},{i % 2},{(i // 7) % 2}" for i in range(frames)]
        (root / "labels" / "s00_v1.csv").write_text("\n".join(rows) + "\n")
    lines = ["video,subject", "videos/s00_v1.avi,s00"]
    for v in range(1, videos):
        shutil.copy(first, root / "videos" / f"s{v:02d}_v1.avi")
        shutil.copy(root / "labels" / "s00_v1.csv", root / "labels" / f"s{v:02d}_v1.csv")
        lines.append(f"videos/s{v:02d}_v1.avi,s{v:02d}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return source


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def decode_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    n, start = 0, time.perf_counter()
    while cap.read()[0]:
        n += 1
    return n / (time.perf_counter() - start)


def per_frame_breakdown(path: Path) -> dict:
    """Milliseconds per frame of decode, landmarks and warp, one thread, after a warm-up frame."""
    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(str(path))
    frames = []
    t0 = time.perf_counter()
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    decode = (time.perf_counter() - t0) / len(frames)
    with quiet_native_stderr(), FaceAligner() as aligner:
        aligner.process(frames[0])
        aligner.reset()
        aligner.process(frames[0])
        t_land = t_warp = 0.0
        timed = 0
        for f in frames[1:]:
            t0 = time.perf_counter()
            found = aligner._landmarks_in_roi(f, aligner._track)
            t1 = time.perf_counter()
            if found is None:  # lost (a jumpy video): found again outside the timing
                aligner.reset()
                aligner.process(f)
                continue
            timed += 1
            landmarks, outline = found
            aligner._track = aligner._next_roi(landmarks, outline)
            warp_crop(f, alignment_transform(landmarks))
            t2 = time.perf_counter()
            t_land += t1 - t0
            t_warp += t2 - t1
    n = max(timed, 1)
    return {"decode_ms": round(1e3 * decode, 3), "landmarks_ms": round(1e3 * t_land / n, 3),
            "warp_ms": round(1e3 * t_warp / n, 3)}


def check_cost(path: Path, rounds: int = 2) -> dict:
    """What the check of followed landmarks costs: CPU ms per frame of ``FaceAligner.process`` over one video with
    the check and with it off (motion limits and crop agreement that never fail: the difference is what the
    corrections cost, as the arithmetic still runs), interleaved ``rounds`` times so a load change hits both alike;
    the check's arithmetic timed alone (motion test and two crop signatures per frame, where the aligner computes
    one: an upper bound); and the share of frames it corrected (each a still-image FaceMesh run). The check's whole
    cost per frame is about (with - without) + arithmetic."""
    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    limits, agreement = align.TRACK_LIMITS, align.MIN_CROP_AGREEMENT
    cpu = {"checked": 0.0, "unchecked": 0.0}
    corrections, faces = 0, []
    with quiet_native_stderr(), FaceAligner() as aligner:
        aligner.process(frames[0])  # graphs built outside the timing
        for _ in range(rounds):
            for mode in cpu:
                if mode == "unchecked":
                    align.TRACK_LIMITS = align.MotionLimits(shift=1e9, scale=1e9, degrees=1e9)
                    align.MIN_CROP_AGREEMENT = -2.0
                try:
                    aligner.reset()
                    start = time.process_time()
                    found = [aligner.process(f) for f in frames]
                    cpu[mode] += time.process_time() - start
                finally:
                    align.TRACK_LIMITS, align.MIN_CROP_AGREEMENT = limits, agreement
                if mode == "checked":
                    corrections, faces = aligner.track_corrections, [f for f in found if f is not None]
    start = time.process_time()
    for a, b in zip(faces, faces[1:]):
        landmarks_moved(a.landmarks, b.landmarks, limits)
        float(crop_signature(a.crop) @ crop_signature(b.crop))
    arithmetic = (time.process_time() - start) / max(len(faces) - 1, 1)
    n = rounds * len(frames)
    return {"checked_cpu_ms": round(1e3 * cpu["checked"] / n, 3), "unchecked_cpu_ms": round(1e3 * cpu["unchecked"] / n, 3),
            "check_arithmetic_ms": round(1e3 * arithmetic, 3),
            "corrected_pct": round(100.0 * corrections / len(frames), 1)}


def preprocess_fps(root: Path, out: Path, workers: int) -> dict:
    """End-to-end frames/s (worker start-up included), and the workers' CPU ms per frame while processing: the
    latter does not depend on what else the machine runs, so it tells a slow figure of ours from a busy machine
    (cores x 1000 / cpu_ms = the steady-state frames/s of an idle machine)."""
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    summary = run_preprocess(root, out, PreprocessOptions(workers=workers))
    seconds = time.perf_counter() - start
    frames = summary["frames_read"]
    cpu = sum(m.get("cpu_seconds", 0.0) for m in open_cache(out).video_meta.values())
    return {"workers": workers, "frames": frames, "seconds": round(seconds, 2),
            "frames_per_second": round(frames / seconds, 1), "cpu_ms_per_frame": round(1e3 * cpu / frames, 2),
            "faces_found_pct": summary["faces_found_pct"], "track_corrections": summary.get("track_corrections", 0)}


def gather_us(cache_dir: Path, repeats: int = 200) -> float:
    cache = open_cache(cache_dir)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, len(cache), 96) for _ in range(repeats)]
    start = time.perf_counter()
    for b in batches:
        cache.images[b]
    return 1e6 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--motion", choices=["smooth", "jumpy"], default="smooth",
                        help="head motion of the synthetic video: smooth (continuous footage) or jumpy (a new pose "
                             "every frame)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        source = make_dataset(root, args.videos, args.frames, args.motion)
        video = root / "videos" / "s00_v1.avi"
        result = {
            "load_average_at_start": round(os.getloadavg()[0], 2),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}",
            "dataset": f"{args.videos} videos x {args.frames} frames, 640x480 MJPG, from {source}",
            "decode_fps": round(decode_fps(video), 1),
            "per_frame": per_frame_breakdown(video),
            "check": check_cost(video),
            "one_worker": preprocess_fps(root, Path(tmp) / "c1", 1),
            "all_workers": preprocess_fps(root, Path(tmp) / "cN", args.workers),
        }
        result["gather_96_us"] = round(gather_us(Path(tmp) / "cN"), 1)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"machine: {result['machine']} (1-min load average at start: {result['load_average_at_start']})")
    print(f"data: {result['dataset']}")
    print(f"decode only:          {result['decode_fps']:8.1f} frames/s")
    pf = result["per_frame"]
    print(f"per frame (1 thread): decode {pf['decode_ms']:.2f} ms, landmarks {pf['landmarks_ms']:.2f} ms, "
          f"warp {pf['warp_ms']:.2f} ms")
    c = result["check"]
    print(f"check against the face: process {c['checked_cpu_ms']:.2f} CPU ms/frame with it, "
          f"{c['unchecked_cpu_ms']:.2f} with limits that never fail; its arithmetic alone "
          f"{c['check_arithmetic_ms']:.3f} ms/frame (upper bound); {c['corrected_pct']}% of frames corrected")
    for key in ("one_worker", "all_workers"):
        r = result[key]
        print(f"preprocess, {r['workers']} worker(s): {r['frames_per_second']:8.1f} frames/s ({r['frames']} frames in "
              f"{r['seconds']} s, {r['cpu_ms_per_frame']} CPU ms/frame, faces {r['faces_found_pct']}%, "
              f"{r['track_corrections']} track corrections)")
    print(f"random 96-frame gather from the cache: {result['gather_96_us']:.0f} us")


if __name__ == "__main__":
    main()
