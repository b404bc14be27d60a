"""Training throughput: the model alone, the trainer's step, a plain PyTorch loop, and `aubench train` itself.

Batches of 96 (12 AUs x 4 + 4), augmentation group D, frames gathered from the memory-mapped cache:
  (a) model only: forward + backward + optimizer step on a ready tensor (channels_last, as the trainer);
  (b) the trainer's full step: ``BatchPlan`` (draw the batch and its augmentation parameters) + ``Step``
      (gather, convert, augment, normalize, forward, backward, step);
  (p) a plain fp32 PyTorch loop as a user would write it: NCHW, kornia's group D, a Python loop over AUs for the
      loss, ``loss.item()`` every step, in a process of its own with glibc's default allocator (the benchmark's
      own process applies ``device.keep_host_memory``, as ``aubench train`` does); (p*) the same loop with
      ``keep_host_memory`` applied, to show how much of the difference is the allocator setting alone;
  (t) ``aubench train`` run end to end as a user runs it (a subprocess), with two epoch lengths, so that start-up
      (imports, cache, validation) cancels: images/s = extra images / extra seconds.
Prints images/s (median and range over interleaved rounds), the data path ratio b/a (target <= 1.10) and
`aubench train` / plain loop (target >= 2). Usage: python benchmarks/train_step.py [--archs baseline] [--device cuda]
[--rounds 3] [--short 2 --long 22] (epochs' lengths in batches for (t); --no-cli skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cachefixture import make_cache  # noqa: E402

from aubench_cli import config as cfgmod  # noqa: E402
from aubench_cli.data.cache import open_cache  # noqa: E402
from aubench_cli.device import keep_host_memory, resolve_device  # noqa: E402
from aubench_cli.models import create_model, get_model_info  # noqa: E402
from aubench_cli.training.sampling import make_sampler, per_au_bce  # noqa: E402
from aubench_cli.training.trainer import BatchPlan, Dist, FrameSource, Step  # noqa: E402
from aubench_cli.training.transforms import FeatureStats, build_augmentation  # noqa: E402

AUS = cfgmod.PAPER_AUS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fns: dict, steps: int, warmup: int, device: torch.device, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of each function in each of ``rounds`` interleaved rounds (background load on a shared
    machine hits every variant alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_step: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            per_step[name].append((time.perf_counter() - start) / steps)
    return per_step


def _fmt(n: int, secs: list[float]) -> str:
    rates = sorted(n / s for s in secs)
    return f"{statistics.median(rates):7.1f} ({rates[0]:.0f}-{rates[-1]:.0f})"


def plain_loop(arch: str, cache, index, device, rng):
    """What a user writes without aubench: NCHW fp32, kornia group D, a per-AU loss loop, a host sync per step."""
    import kornia.augmentation as K

    m = cfgmod.AugmentConfig()
    aug = K.AugmentationSequential(
        K.RandomHorizontalFlip(p=m.flip_p), K.RandomBrightness(brightness=(1 - m.brightness, 1 + m.brightness), p=1.0),
        K.RandomContrast(contrast=(1 - m.contrast, 1 + m.contrast), p=1.0),
        K.RandomGaussianBlur(kernel_size=(5, 5), sigma=(0.1, m.blur_sigma), p=m.blur_p),
        K.RandomAffine(degrees=m.rotate, translate=(m.shift, m.shift), scale=(1 - m.zoom, 1 + m.zoom), p=1.0,
                       padding_mode="border"), data_keys=["input"])
    torch.manual_seed(0)
    model = create_model(arch, len(AUS)).to(device).train()
    info = get_model_info(arch)
    opt = (torch.optim.Adagrad if info.from_scratch else torch.optim.Adam)(model.parameters(), lr=info.lr)
    sampler = make_sampler("oversample", cache.labels, index, np.random.default_rng(0))
    images = cache.images

    def step() -> None:
        idx, targets = sampler.draw(rng)
        x = torch.from_numpy(np.ascontiguousarray(images[idx])).unsqueeze(1).float().div(255).to(device)
        with torch.no_grad():
            x = aug(x).clamp(0, 1)
        logits = model(x)
        t = torch.from_numpy(targets).to(device)
        losses = []
        for k in range(t.shape[1]):
            rows = t[:, k] >= 0
            losses.append(F.binary_cross_entropy_with_logits(logits[rows, k], t[rows, k].float()))
        loss = torch.stack(losses).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()

    return step


def plain_child(cache_dir: Path, arch: str, device: str, steps: int, warmup: int, keep: bool) -> float:
    """Seconds per step of the plain loop in a fresh process (default allocator unless ``keep``)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, __file__, "--child-plain", str(cache_dir), "--archs", arch, "--device", device,
           "--steps", str(steps), "--warmup", str(warmup)] + (["--keep"] if keep else [])
    out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def run_plain_child(args: argparse.Namespace) -> None:
    if args.keep:
        keep_host_memory()
    device = resolve_device(args.device)
    cache = open_cache(args.child_plain)
    index = cache.indices("train")
    step = plain_loop(args.archs[0], cache, index, device, np.random.default_rng(1))
    print(statistics.median(timed({"p": step}, args.steps, args.warmup, device, 1)["p"]))


def cli_rate(cache_dir: Path, arch: str, device: str, short: int, long: int, rounds: int) -> tuple[list[float], list[float]]:
    """`aubench train` end to end, twice per round (short and long epochs); images/s from the difference."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    walls: dict[int, list[float]] = {short: [], long: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for n in (short, long) if r % 2 == 0 else (long, short):
                cmd = [sys.executable, "-m", "aubench_cli", "train", "--cache", str(cache_dir), "--arch", arch,
                       "--aug", "D", "--epochs", "1", "--batches-per-epoch", str(n), "--val-batches", "5",
                       "--device", device, "--out", str(Path(tmp) / f"r{r}-{n}"), "--json"]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, capture_output=True)
                walls[n].append(time.perf_counter() - start)
    per_batch = [(lo_ - sh_) / (long - short) for sh_, lo_ in zip(walls[short], walls[long])]
    return per_batch, walls[short]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", nargs="+", default=["baseline"])
    parser.add_argument("--steps", type=int, default=6, help="steps per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=22)
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--child-plain", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_plain:
        return run_plain_child(args)
    keep_host_memory()  # as aubench train does (device.keep_host_memory); the plain loop runs in its own process
    device = resolve_device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load:.1f}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = make_cache(Path(tmp) / "cache", subjects=8, videos_per_subject=2, frames=150, aus=AUS)
        cache = open_cache(cache_dir)
        index = cache.indices("train")
        sampler = make_sampler("oversample", cache.labels, index, np.random.default_rng(0))
        n = sampler.batch_size
        # limit=0: every batch is gathered from the memory-mapped shards on disk, the slowest path.
        source = FrameSource(cache.images, index, device, limit=0)
        print(f"batch {n} ({len(AUS)} AUs x 8), augmentation group D, frames read from the mmap; "
              f"images/s median (range) over {args.rounds} interleaved rounds")
        for arch in args.archs:
            torch.manual_seed(0)
            model = create_model(arch, len(AUS)).to(device).train().to(memory_format=torch.channels_last)
            info = get_model_info(arch)
            opt = (torch.optim.Adagrad if info.from_scratch else torch.optim.Adam)(model.parameters(), lr=info.lr)
            autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                        else contextlib.nullcontext())
            aug = build_augmentation("D", cfgmod.AugmentConfig())
            step = Step(model, opt, source, aug, "raw", FeatureStats(), True, autocast)
            plan = BatchPlan(sampler, cache.labels, aug, 0, Dist(device=device), device, False, False)
            counter = {"s": 0}
            b0 = plan(0)
            x = step.inputs(b0.idx, b0.aug)

            def model_only() -> None:
                with autocast:
                    logits = model(x)
                loss = per_au_bce(logits, b0.targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def full() -> None:
                counter["s"] += 1
                step.train_step(plan(counter["s"]))

            def data_only() -> None:
                counter["s"] += 1
                b = plan(counter["s"])
                step.inputs(b.idx, b.aug)

            fns = {"a": model_only, "b": full, "d": data_only}
            t: dict[str, list[float]] = {"a": [], "b": [], "d": [], "p": [], "p*": []}
            for r in range(args.rounds):  # interleaved: in-process variants, then the plain loop's two processes
                for k, v in timed(fns, args.steps, args.warmup if r == 0 else 0, device, 1).items():
                    t[k] += v
                for k, keep in (("p", False), ("p*", True)):
                    t[k].append(plain_child(cache_dir, arch, str(device), args.steps, args.warmup, keep))
            a, b, p = (statistics.median(t[k]) for k in "abp")
            print(f"{arch}: (a) model only {_fmt(n, t['a'])}  (b) full step {_fmt(n, t['b'])}  "
                  f"data path alone {statistics.median(t['d']) * 1e3:.1f} ms/batch  ratio b/a {b / a:.2f} (target <= 1.10)")
            print(f"{arch}: (p) plain PyTorch loop {_fmt(n, t['p'])}  trainer step / plain {p / b:.2f}")
            print(f"{arch}: (p*) plain loop with keep_host_memory {_fmt(n, t['p*'])}  "
                  f"trainer step / that {statistics.median(t['p*']) / b:.2f}")
            if not args.no_cli:
                per_batch, short_walls = cli_rate(cache_dir, arch, str(device), args.short, args.long, args.rounds)
                cli = statistics.median(per_batch)
                rates = sorted(n / s for s in per_batch)
                print(f"{arch}: (t) aubench train end to end {n / cli:7.1f} ({rates[0]:.0f}-{rates[-1]:.0f}) images/s "
                      f"(epochs of {args.short} and {args.long} batches; start-up {statistics.median(short_walls):.1f} s "
                      f"with {args.short} batches)  aubench train / plain {p / cli:.2f} (target >= 2)")


if __name__ == "__main__":
    main()
