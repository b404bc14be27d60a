"""Benchmark `aubench eval`: images/s of a whole evaluation against the pure forward pass of the same model.

The evaluation forwards every frame of the test split once (large batches, inference_mode, channels_last;
float32, or bf16 autocast with --precision bf16), then indexes those predictions with the paper's 3000 balanced test batches and computes
the metrics, the intervals over subjects and the cache's content identity (hashing its images once). Its
images/s counts the split's frames; the ratio eval/forward says how much the data path and the metrics cost.
Usage: python benchmarks/eval.py [--arch baseline] [--frames 400] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cachefixture import make_cache  # noqa: E402

from aubench_cli import config as cfgmod  # noqa: E402
from aubench_cli.evaluation.evaluate import evaluate_run  # noqa: E402
from aubench_cli.models import create_model  # noqa: E402
from aubench_cli.device import PRECISIONS, inference_precision, resolve_device  # noqa: E402
from aubench_cli.training.trainer import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="baseline")
    parser.add_argument("--frames", type=int, default=500, help="frames per video (2 videos per subject, 2 test subjects)")
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, device {device}, "
          f"{args.precision}")
    with tempfile.TemporaryDirectory() as tmp:
        # 2 test subjects (so the intervals are computed), 1 validation, 5 training
        splits = {f"S{i:02d}": s for i, s in enumerate(["val", "test", "test"] + ["train"] * 5)}
        cache = make_cache(Path(tmp) / "cache", subjects=8, frames=args.frames, aus=cfgmod.PAPER_AUS, splits=splits)
        cfg = cfgmod.resolve(sets=["train.epochs=1", "train.batches_per_epoch=1", "train.val_batches=1"],
                             options={"data.cache": str(cache), "model.arch": args.arch, "train.device": args.device})
        train(cfg, Path(tmp) / "run")
        evaluate_run(Path(tmp) / "run", batches=10, write=False, device=args.device, precision=args.precision)
        started = time.perf_counter()
        result = evaluate_run(Path(tmp) / "run", batches=args.batches, write=False, device=args.device,
                              precision=args.precision)
        eval_s = time.perf_counter() - started
        n = result["frames_in_split"]

        model = create_model(args.arch, len(cfgmod.PAPER_AUS)).to(device).eval()
        cuda = device.type == "cuda"
        x = torch.rand(512, 1, 96, 96, device=device)
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), inference_precision(device, args.precision):
            model(x[:64])
            started = time.perf_counter()
            done = 0
            while done < n:
                model(x[: min(512, n - done)])
                done += min(512, n - done)
            if cuda:
                torch.cuda.synchronize()
            forward_s = time.perf_counter() - started
    print(f"{args.arch}: test split of {n} frames, {args.batches} balanced batches")
    print(f"eval     {n / eval_s:9.1f} images/s  ({eval_s:.2f} s, data path + forward + metrics)")
    print(f"forward  {n / forward_s:9.1f} images/s  ({forward_s:.2f} s, ready tensors)")
    print(f"ratio eval/forward: {forward_s / eval_s:.2f}")


if __name__ == "__main__":
    main()
