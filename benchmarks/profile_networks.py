"""Benchmark `aubench profile --all`: wall time of the whole command, and per-network speed.

Runs the real command (a subprocess, as a user would), so import and model-build time are included, then
prints the per-network images/s it measured. Usage: python benchmarks/profile_networks.py [--batch 16] [--paper]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--paper", action="store_true", help="also pass --paper (14 outputs, paper figures)")
    args = parser.parse_args()

    cmd = [sys.executable, "-m", "aubench_cli", "profile", "--all", "--json", "--batch", str(args.batch)]
    if args.paper:
        cmd.append("--paper")
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    rows = json.loads(out.stdout)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}, device {rows[0]['device']}")
    print(f"`aubench profile --all{' --paper' if args.paper else ''}` wall time: {wall:.1f} s")
    print(f"{'arch':12s} {'FLOPs':>10s} {'params':>11s} {'ms/batch':>9s} {'images/s':>9s}   (batch {args.batch})")
    for r in rows:
        print(f"{r['arch']:12s} {r['flops'] / 1e6:9.1f}M {r['params']:>11,d} {r['latency_ms']:9.1f} {r['images_per_s']:9.1f}")


if __name__ == "__main__":
    main()
