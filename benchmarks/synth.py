"""Benchmark of ``aubench synth``: frames/s rendering and writing one 640x480 video of 300 frames.

Measures, for one synthetic subject (the first of seed 0):

* set-up: the face landmarks and mask of the photo (once per process) and the per-video renderer precomputation;
* labels: generating the video's AU labels (no rendering);
* render: the frames alone, in milliseconds per frame and frames/s;
* end to end: ``synthesize`` writing the whole dataset (one MJPG video plus labels), in frames/s, as a user sees it.

Usage: ``python benchmarks/synth.py [--frames 300] [--size 640x480] [--repeat 3] [--json]``. The best of
``--repeat`` runs is reported (the others are slowed by whatever else the machine is doing). Figures go to
docs/performance.md and docs/data.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aubench_cli.data import synth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = synth.parse_size(args.size)
    config = synth.SynthConfig(subjects=1, videos_per_subject=1, frames=args.frames, width=width, height=height)

    t = time.perf_counter()
    synth.astronaut_landmarks()
    synth.astronaut_mask()
    photo_s = time.perf_counter() - t

    t = time.perf_counter()
    labels = synth.subject_labels(config, 0)[0]
    labels_s = time.perf_counter() - t

    renderer_s, render_s, end_to_end_s = [], [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        renderer = synth.FaceRenderer(labels.aus, (width, height), synth.subject_identity(config.seed, 0))
        renderer_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _frame in synth.render_video(config, 0, 0, labels, renderer):
            pass
        render_s.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            synth.synthesize(Path(tmp) / "data", config)
            end_to_end_s.append(time.perf_counter() - t)

    n = args.frames
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "size": f"{width}x{height}",
        "frames": n,
        "photo_setup_s": round(photo_s, 2),
        "labels_s": round(labels_s, 3),
        "renderer_setup_s": round(min(renderer_s), 3),
        "render_ms_per_frame": round(1000 * min(render_s) / n, 2),
        "render_frames_per_s": round(n / min(render_s), 1),
        "end_to_end_s": round(min(end_to_end_s), 2),
        "end_to_end_frames_per_s": round(n / min(end_to_end_s), 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"aubench synth, one {result['size']} video of {n} frames on {result['machine']} (best of {args.repeat})")
    print(f"  photo landmarks + mask (once per process): {result['photo_setup_s']:.2f} s")
    print(f"  labels:                                    {result['labels_s'] * 1000:.0f} ms")
    print(f"  renderer set-up (per video):               {result['renderer_setup_s'] * 1000:.0f} ms")
    print(f"  render only:     {result['render_ms_per_frame']:6.2f} ms/frame  "
          f"{result['render_frames_per_s']:7.1f} frames/s")
    print(f"  synthesize (render + MJPG + labels): {result['end_to_end_s']:.2f} s  "
          f"{result['end_to_end_frames_per_s']:7.1f} frames/s")


if __name__ == "__main__":
    main()
