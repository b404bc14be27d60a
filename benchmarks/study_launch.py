"""Cost of launching studies: submitting a 33-run study to SLURM (a fake sbatch that records and answers), and
`aubench study PRESET --dry-run` for every paper preset, each as a user runs it (a subprocess, start-up included).

    python benchmarks/study_launch.py [--repeats 3]

The 33 runs are Table I's 11 networks x 3 seeds (`--seeds 3`, `--set model.pretrained=true` so no run lacks
weights); the cache is a small fixture written with the cache's own writer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cachefixture import make_cache  # noqa: E402

PRESETS = ["table1-architectures", "table2-normalization", "table2-augmentation",
           "table2-balancing", "fig2-frames", "fig2-subjects"]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    aubench = [sys.executable, "-m", "aubench_cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = make_cache(tmp / "cache", subjects=4, videos_per_subject=1, frames=10)
        fake = tmp / "bin"
        fake.mkdir()
        (fake / "sbatch").write_text("#!/bin/sh\necho 'Submitted batch job 4242'\n")
        (fake / "srun").write_text("#!/bin/sh\nexit 1\n")
        for tool in ("sbatch", "srun"):
            (fake / tool).chmod(0o755)
        env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
        submit, dry = [], {p: [] for p in PRESETS}
        for i in range(args.repeats):  # interleaved
            submit.append(_timed(aubench + ["study", "table1-architectures", "--cache", str(cache), "--seeds", "3",
                                            "--set", "model.pretrained=true", "--launcher", "slurm",
                                            "--out", str(tmp / f"submit{i}")], env))
            for preset in PRESETS:
                dry[preset].append(_timed(aubench + ["study", preset, "--cache", str(cache), "--dry-run",
                                                     "--out", str(tmp / f"dry{i}")], env))
    def show(name: str, ts: list[float]) -> None:
        print(f"{name:44s} median {statistics.median(ts):5.2f} s  (min {min(ts):.2f}, max {max(ts):.2f}, n={len(ts)})")

    show("submit 33 runs (slurm, fake sbatch)", submit)
    for preset, ts in dry.items():
        show(f"--dry-run {preset}", ts)


if __name__ == "__main__":
    main()
