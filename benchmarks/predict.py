"""Benchmark of ``aubench predict``: frames/s with 1 worker and every core, and peak memory against video length.

Builds a baseline run (a short training on a small synthetic-square cache, ``tests/cachefixture.py``: weights do
not change the speed) and 640x480 MJPG videos rendered by ``aubench synth`` (one rendered video, copied), then

* **speed**: ``aubench predict RUN DIR --workers W --json`` as a subprocess (imports, worker start-up, model
  loads, everything a user waits for) on a short and a long set of ``--videos`` videos each (``--short`` and
  ``--long`` frames per video); frames/s = (frames_long - frames_short) / (t_long - t_short), which cancels the
  start-up. Rounds are interleaved (1 worker short, 1 worker long, W short, W long, ...) so a busy machine slows
  every configuration alike; the median and the spread over the rounds are printed with the load average.
* **memory**: peak RSS (``VmHWM``) of one in-process predict (1 worker) on a ``--mem-short``-frame and a
  ``--mem-long``-frame video (the rendered frames looped, 320x240 to keep the file small and the run short:
  alignment costs the same per frame whatever the frame size).

Usage: ``python benchmarks/predict.py [--rounds 3] [--videos 2] [--short 100] [--long 400] [--workers N]
[--mem-short 1000] [--mem-long 20000] [--skip-memory] [--json]``. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))


def load() -> float:
    return os.getloadavg()[0]


def make_run(root: Path) -> Path:
    from cachefixture import make_cache

    from aubench_cli import config as cfgmod
    from aubench_cli.training.trainer import train

    from aubench_cli.data.align import CROP_PIPELINE_VERSION

    cache = make_cache(root / "cache", frames=20)
    header = json.loads((cache / "cache.json").read_text())
    header["settings"]["crop_pipeline"] = CROP_PIPELINE_VERSION  # as preprocess writes it: predict checks it
    (cache / "cache.json").write_text(json.dumps(header))
    cfg = cfgmod.resolve(sets=["train.epochs=1", "train.batches_per_epoch=2", "train.val_batches=1", "train.aug=A"],
                         options={"data.cache": str(cache), "model.arch": "baseline"})
    train(cfg, root / "run")
    return root / "run"


def rendered_frames(root: Path, frames: int) -> list:
    from aubench_cli.data.synth import SynthConfig, synthesize

    synthesize(root / "synth", SynthConfig(subjects=1, videos_per_subject=1, frames=frames, layout="generic", seed=0))
    rel = (root / "synth" / "manifest.csv").read_text().splitlines()[1].split(",")[0]
    cap = cv2.VideoCapture(str(root / "synth" / rel))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def write(path: Path, frames: list, n: int, size: tuple[int, int] | None = None) -> None:
    """``n`` frames: the rendered ones, played forwards then backwards (no jump where the loop turns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    size = size or (w, h)
    cycle = frames + frames[-2:0:-1]
    if size != (w, h):
        cycle = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in cycle]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for i in range(n):
        writer.write(cycle[i % len(cycle)])
    writer.release()


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def predict_cli(run: Path, folder: Path, out: Path, workers: int) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds (exact for 1 worker, in-process; pool workers are the forkserver's children and
    are not all counted) and the summary of one ``aubench predict`` subprocess."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "aubench_cli", "predict", str(run), str(folder), "--out", str(out),
                           "--workers", str(workers), "--json"], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, cpu, json.loads(proc.stdout)


def peak_rss_mib() -> float:
    """This process's own peak RSS: ``VmHWM`` of /proc/self/status (Linux). Not ``ru_maxrss``: the kernel carries
    that across fork and exec, so a child started by a big parent reports the parent's RSS at the fork (how the
    first figures recorded here, 1.45 GB, measured the benchmark process rather than predict)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_memory(run: str, video: str, out: str) -> None:
    """Run in a fresh process: predict one video in-process, print frames and peak RSS (MiB)."""
    from aubench_cli.evaluation.predict import PredictOptions, run_predict

    summary = run_predict(run, [video], PredictOptions(out=out, workers=1))
    rss = peak_rss_mib()
    print(json.dumps({"frames": summary["frames"], "faces": summary["faces_found"], "peak_rss_mib": round(rss, 1),
                      "seconds": summary["seconds"]}))


def memory(run: Path, video: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, __file__, "--child-memory", str(run), str(video), str(out)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"memory child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--short", type=int, default=100)
    ap.add_argument("--long", type=int, default=400)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--mem-short", type=int, default=1000)
    ap.add_argument("--mem-long", type=int, default=20000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child-memory", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        child_memory(*args.child_memory)
        return

    tmp = Path(tempfile.mkdtemp(prefix="aubench-predict-bench-"))
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "python": platform.python_version(), "load_before": round(load(), 2)}
    try:
        run = make_run(tmp)
        frames = rendered_frames(tmp, min(args.long, 300))
        if not args.skip_speed:
            sets = {}
            for label, n in (("short", args.short), ("long", args.long)):
                for v in range(args.videos):
                    write(tmp / label / f"v{v}.avi", frames, n)
                sets[label] = tmp / label
            configs = sorted({1, args.workers})
            times: dict[int, dict[str, list[float]]] = {w: {"short": [], "long": []} for w in configs}
            cpus: dict[str, list[float]] = {"short": [], "long": []}
            loads = []
            for r in range(args.rounds):
                for w in configs:
                    for label in ("short", "long"):
                        seconds, cpu, summary = predict_cli(run, sets[label], tmp / "out", w)
                        if w == 1:
                            cpus[label].append(cpu)
                        assert summary["frames"] == args.videos * (args.short if label == "short" else args.long)
                        times[w][label].append(seconds)
                        loads.append(load())
                        if not args.json:
                            print(f"round {r + 1}: {w} worker(s), {label}: {seconds:.2f} s (load {loads[-1]:.1f})",
                                  flush=True)
            extra = args.videos * (args.long - args.short)
            speed = {}
            for w in configs:
                fps = [extra / (tl - ts) for ts, tl in zip(times[w]["short"], times[w]["long"])]
                startup = [ts - args.videos * args.short / f for ts, f in zip(times[w]["short"], fps)]
                speed[w] = {"frames_per_s_median": round(statistics.median(fps), 1),
                            "frames_per_s_min": round(min(fps), 1), "frames_per_s_max": round(max(fps), 1),
                            "startup_s_median": round(statistics.median(startup), 2),
                            "seconds": {k: [round(x, 2) for x in v] for k, v in times[w].items()}}
            # CPU time per frame of the 1-worker run (start-up cancelled the same way): a busy machine inflates it
            # far less than wall time, and cores / it bounds what the pool can do on an idle machine
            cpu_ms = [1000 * (cl - cs) / extra for cs, cl in zip(cpus["short"], cpus["long"])]
            result["cpu_ms_per_frame_1_worker"] = {"median": round(statistics.median(cpu_ms), 2),
                                                   "min": round(min(cpu_ms), 2), "max": round(max(cpu_ms), 2)}
            result["speed"] = {"videos": args.videos, "frames_short": args.short, "frames_long": args.long,
                               "size": "640x480", "per_workers": speed,
                               "load_min": round(min(loads), 2), "load_max": round(max(loads), 2),
                               "load_median": round(statistics.median(loads), 2)}
        if not args.skip_memory:
            mem = {}
            for n in (args.mem_short, args.mem_long):
                path = tmp / "mem" / f"m{n}.avi"
                write(path, frames, n, size=(320, 240))
                mem[n] = memory(run, path, tmp / "memout")
                mem[n]["load"] = round(load(), 2)
                path.unlink()
                if not args.json:
                    print(f"memory: {n} frames -> peak RSS {mem[n]['peak_rss_mib']} MiB ({mem[n]['seconds']} s)",
                          flush=True)
            result["memory"] = {"size": "320x240", **{str(k): v for k, v in mem.items()},
                                "ratio_long_short": round(mem[args.mem_long]["peak_rss_mib"]
                                                          / mem[args.mem_short]["peak_rss_mib"], 3)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_after"] = round(load(), 2)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
