"""Benchmark one training step: (a) the model alone on ready tensors, (b) the trainer's full step.

(b) is what `aubench train` does per batch: draw a balanced batch (4+4 per AU, 12 AUs), gather its uint8 frames
from a memory-mapped cache on disk, convert, augment with group D (kornia), normalize, forward, backward,
optimizer step. Prints images/s for both and the ratio a/b (how much the data path costs). Runs on CUDA too
when one is present. Usage: python benchmarks/train_step.py [--archs baseline lightcnn9] [--steps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cachefixture import make_cache  # noqa: E402

from aubench_cli import config as cfgmod  # noqa: E402
from aubench_cli.data.cache import open_cache  # noqa: E402
from aubench_cli.models import create_model, get_model_info  # noqa: E402
from aubench_cli.device import resolve_device  # noqa: E402
from aubench_cli.training.sampling import make_sampler, per_au_bce  # noqa: E402
from aubench_cli.training.trainer import FrameSource, Step  # noqa: E402
from aubench_cli.training.transforms import FeatureStats, build_augmentation  # noqa: E402

AUS = cfgmod.PAPER_AUS


def timed(fns: dict, steps: int, warmup: int, device: torch.device, rounds: int = 5) -> dict[str, float]:
    """Median seconds per step of each function, measured in interleaved rounds (so background load on a shared
    machine hits every variant alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_step: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(max(1, steps // rounds)):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_step[name].append((time.perf_counter() - start) / max(1, steps // rounds))
    return {name: sorted(times)[len(times) // 2] for name, times in per_step.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", nargs="+", default=["baseline", "lightcnn9"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = make_cache(Path(tmp) / "cache", subjects=8, videos_per_subject=2, frames=150, aus=AUS)
        cache = open_cache(cache_dir)
        index = cache.indices("train")
        sampler = make_sampler("oversample", cache.labels, index, np.random.default_rng(0))
        rng = np.random.default_rng(1)
        # limit=0: every batch is gathered from the memory-mapped shards on disk, the slowest path.
        source = FrameSource(cache.images, index, device, limit=0)
        print(f"batch {sampler.batch_size} ({len(AUS)} AUs x 8), augmentation group D, frames read from the mmap")
        print(f"{'arch':12s} {'(a) model img/s':>16s} {'(b) full img/s':>15s} {'ratio a/b':>10s}  channels_last")
        for arch in args.archs:
            torch.manual_seed(0)
            model = create_model(arch, len(AUS)).to(device).train()
            channels_last = True  # what `aubench train` uses (train.channels_last: auto)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            info = get_model_info(arch)
            opt = (torch.optim.Adagrad(model.parameters(), lr=info.lr) if info.from_scratch
                   else torch.optim.Adam(model.parameters(), lr=info.lr))
            autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                        else contextlib.nullcontext())
            step = Step(model, opt, source, build_augmentation("D", cfgmod.AugmentConfig()), "raw", FeatureStats(),
                        False, channels_last, autocast)
            idx, targets = sampler.draw(rng)
            t = torch.from_numpy(targets).to(device)
            x = step.inputs(idx, train=True)

            def model_only() -> None:
                with autocast:
                    logits = model(x)
                loss = per_au_bce(logits, t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def full() -> None:
                i, tg = sampler.draw(rng)
                step.train_step(i, torch.from_numpy(tg).to(device, non_blocking=True))

            times = timed({"a": model_only, "b": full}, args.steps, args.warmup, device)
            a, b = times["a"], times["b"]
            n = sampler.batch_size
            print(f"{arch:12s} {n / a:16.1f} {n / b:15.1f} {b / a:10.2f}  {channels_last}")


if __name__ == "__main__":
    main()
