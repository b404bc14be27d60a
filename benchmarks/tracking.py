"""What TensorBoard event files cost a run: the time of one epoch's write (``Tracker.epoch``: 4 + K scalars and a
flush to disk) and of the end-of-run HParams session, against the time of one training epoch of the paper's
protocol (300 batches) measured on this machine with the baseline network. Nothing is written per step, so the
per-step cost is the epoch's write divided by the epoch's steps.

    python benchmarks/tracking.py [--epochs 200] [--aus 12] [--steps 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs written (timed one by one)")
    parser.add_argument("--aus", type=int, default=12, help="AUs per epoch (validation accuracies)")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed for the step's own cost")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from aubench_cli import config as cfgmod
    from aubench_cli.training.tracking import Tracker, hparams_of

    aus = [f"AU{k:02d}" for k in range(1, args.aus + 1)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        tracker = Tracker(Path(folder), enabled=True, first_epoch=None)
        times = []
        for epoch in range(1, args.epochs + 1):
            row = {"epoch": epoch, "train_loss": float(rng.random()), "val_mean": float(rng.random()), "lr": 0.005,
                   "images_per_s": 1000.0, **{f"val_{au}": float(rng.random()) for au in aus}}
            tick = time.perf_counter()
            tracker.epoch(row, aus)
            times.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        tracker.finish(hparams_of(cfgmod.to_dict(cfgmod.Config()), {"au_names": aus}), {"epoch": 1, "mean": 0.5},
                       args.epochs)
        finish = time.perf_counter() - tick
        size = sum(p.stat().st_size for p in Path(folder).iterdir())

    step = _step_seconds(args.steps, len(aus))
    epoch_ms = 1000 * statistics.median(times[1:])  # the first opens the file
    result = {"epoch_write_ms_median": round(epoch_ms, 3), "first_write_ms_with_import": round(1000 * times[0], 1),
              "finish_ms": round(1000 * finish, 2), "bytes_per_epoch": round(size / args.epochs),
              "train_step_ms": round(1000 * step, 2), "epoch_of_300_steps_s": round(300 * step, 2),
              "write_share_of_epoch": f"{epoch_ms / (300 * step * 1000):.2e}"}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:24s} {value}")


def _step_seconds(steps: int, k: int) -> float:
    """The median time of one training step of the baseline (8 frames per AU, 96x96, this machine's CPU)."""
    import torch

    from aubench_cli.models import create_model

    model = create_model("baseline", k)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.005)
    x = torch.rand(8 * k, 1, 96, 96)
    y = torch.randint(0, 2, (8 * k, k)).float()
    times = []
    for _ in range(steps + 2):
        tick = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
    return statistics.median(times[2:])


if __name__ == "__main__":
    main()
