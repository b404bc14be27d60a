"""The end of an epoch: what a checkpoint costs and how much of it the background writer takes off the training thread.

For each network (Adagrad state included, as the paper's from-scratch networks train): the state's size, the copy
to host memory (``trainer.host_copy``, done in the training thread), ``torch.save`` and the atomic, fsynced write
(done by the writer thread), and how much a pure-Python loop in the training thread slows while a save runs beside
it (the writer holds the GIL part of the time). Median (range) over ``--rounds``.
Usage: python benchmarks/checkpoint_write.py [--archs resnet50 inceptionv3] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from aubench_cli.fileio import atomic_write_bytes  # noqa: E402
from aubench_cli.models import create_model  # noqa: E402
from aubench_cli.training.trainer import host_copy, save_checkpoint  # noqa: E402


def _busy(n: int = 2_000_000) -> None:
    total = 0
    for i in range(n):
        total += i


def _ms(values: list[float]) -> str:
    v = sorted(1e3 * x for x in values)
    return f"{statistics.median(v):.0f} ({v[0]:.0f}-{v[-1]:.0f}) ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["resnet50", "inceptionv3"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} cores, load {load:.1f}, torch {torch.__version__}")
    folder = Path(tempfile.mkdtemp(prefix="aubench-ckpt-", dir=args.dir))
    try:
        for arch in args.archs:
            model = create_model(arch, 12)
            opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
            model(torch.randn(2, 1, 96, 96)).sum().backward()
            opt.step()
            t: dict[str, list[float]] = {k: [] for k in ("copy", "save", "write", "alone", "beside")}
            size = 0
            for _ in range(args.rounds):
                a = time.perf_counter()
                state = {"model": host_copy(model.state_dict()), "optimizer": host_copy(opt.state_dict())}
                b = time.perf_counter()
                buffer = io.BytesIO()
                torch.save(state, buffer)
                c = time.perf_counter()
                atomic_write_bytes(folder / "last.pt", buffer.getbuffer())
                d = time.perf_counter()
                size = buffer.getbuffer().nbytes
                t["copy"].append(b - a)
                t["save"].append(c - b)
                t["write"].append(d - c)
                a = time.perf_counter()
                _busy()
                t["alone"].append(time.perf_counter() - a)
                writer = threading.Thread(target=save_checkpoint, args=([folder / "best.pt"], state))
                a = time.perf_counter()
                writer.start()
                _busy()
                t["beside"].append(time.perf_counter() - a)
                writer.join()
            print(f"{arch}: {size / 1e6:.0f} MB; training thread: host copy {_ms(t['copy'])}; writer thread: "
                  f"torch.save {_ms(t['save'])}, write + fsync {_ms(t['write'])}; a Python loop in the training "
                  f"thread: alone {_ms(t['alone'])}, beside a save {_ms(t['beside'])}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
