"""Training throughput of every network through aubench's real training step, CUDA graphs on and off, and the
hours the paper's full protocol would take at that pace (per network and for the Table I sweep).

Each (network, graphs setting) is a real run set up by the trainer (``set_up``: data, model, optimizer, frames on
the device) on a given cache, trained through ``train_epoch`` (balanced batches drawn, augmentation D, normalization,
forward, backward, optimizer step), validated through ``validate`` and closed through ``end_epoch`` (metrics and
``last.pt``), exactly as ``aubench train`` does. A first epoch warms up (kernels chosen, graphs captured); then
epochs are timed until ``--seconds`` have passed (at least one). Reported per network: training images/s,
validation batches/s, the per-epoch work (``end_epoch`` in the training thread: metrics, TensorBoard, the copy of
the state to host memory; the checkpoint is written in the background while the next epoch trains, so a write that
slows training shows in the training figures, and one slower than an epoch as a wait here), and the full protocol
projected from the time per batch: 600 epochs x (300 training batches + 300 validation batches + the per-epoch
work) (spec/protocol.md), for
the paper's batch (8 x 12 AUs = 96) when the cache has 12 AUs. The Table I sweep is the sum over its 11 networks.

``--pack N`` runs N copies of each measurement at once on the device (separate processes, as ``aubench study
--runs-per-device N`` does), timed together after a barrier, and reports their aggregate images/s beside one run
alone.

CPU (small settings; what the test suite runs): python benchmarks/gpu.py --cache CACHE --device cpu --arch baseline
--batches-per-epoch 2 --val-batches 2 --seconds 0 --graphs off,emulate --json
GPU: source .gpu/env.sh && python3 benchmarks/gpu.py --cache .gpu/cache --device cuda --folds 5 --fold 0 --json-out
FILE (all 11 networks, graphs on and off; --budget caps the whole run, what is left is marked skipped).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from aubench_cli import config as cfgmod  # noqa: E402
from aubench_cli.models import list_models  # noqa: E402

PROTOCOL = {"epochs": 600, "batches_per_epoch": 300, "val_batches": 300, "batch": 96}  # spec/protocol.md


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _barrier(path: str | None, count: int, timeout: float = 120.0) -> None:
    """Packed children start timing together: each drops a file, then waits for ``count`` of them."""
    if not path:
        return
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def measure(arch: str, graphs: str, args: argparse.Namespace) -> dict[str, Any]:
    """One network, one graphs setting: warm-up epoch, then timed epochs until ``args.seconds`` have passed."""
    from aubench_cli.training import trainer as tr

    sets = {"model.arch": arch, "train.aug": args.aug, "train.cuda_graphs": graphs, "train.seed": args.seed,
            "train.batches_per_epoch": args.batches_per_epoch, "train.val_batches": args.val_batches,
            "train.pos_per_au": args.pos_per_au, "train.neg_per_au": args.neg_per_au, "train.epochs": 10_000,
            "train.amp": not args.no_amp, "train.device": args.device, "data.drop_unbalanceable": True}
    if args.folds:
        sets.update({"data.folds": args.folds, "data.fold": args.fold})
    cfg = cfgmod.resolve(sets=[f"{k}={v}" for k, v in sets.items()], options={"data.cache": args.cache})
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aubench-gpu-") as tmp:
        ddp, device = tr.init_distributed(cfg.train.device)
        tr.keep_host_memory()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        cfg, run_dir, _ = tr.open_run(cfg, Path(tmp) / "run", False, None, True, ddp, log=lines.append)
        start = time.perf_counter()
        run = tr.set_up(cfg, run_dir, None, ddp, device, lines.append)
        run_dir.mkdir(parents=True, exist_ok=True)
        interrupted = {"set": False}
        tr.train_epoch(run, 1, interrupted, None)  # warm-up: kernels chosen, graphs captured
        tr.validate(run)
        _sync(device)
        warmup = time.perf_counter() - start
        _barrier(args.barrier, args.barrier_count)
        train_s = val_s = end_s = 0.0
        epochs, epoch = 0, 2
        while epochs < 1 or train_s + val_s + end_s < args.seconds:
            t0 = time.perf_counter()
            loss = tr.train_epoch(run, epoch, interrupted, None)  # returns a float: synced
            t1 = time.perf_counter()
            per_au = tr.validate(run)  # a numpy array: synced
            t2 = time.perf_counter()
            tr.end_epoch(run, epoch, loss, per_au, None)
            t3 = time.perf_counter()
            train_s, val_s, end_s = train_s + t1 - t0, val_s + t2 - t1, end_s + t3 - t2
            epochs, epoch = epochs + 1, epoch + 1
        t0 = time.perf_counter()
        run.writer.wait()  # the last epoch's checkpoints (written in the background while the next epoch trains)
        last_write_s = time.perf_counter() - t0
        mode = "off" if run.graph_step is None else run.graph_step.state
        val_mode = "off" if run.graph_val is None else run.graph_val.state
        batch, steps = run.batch_size, run.steps_per_epoch
        val_batches = len(run.val_batches)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    s_batch, s_val = train_s / (epochs * steps), val_s / (epochs * val_batches)
    s_end = end_s / epochs
    protocol_s = PROTOCOL["epochs"] * (PROTOCOL["batches_per_epoch"] * s_batch + PROTOCOL["val_batches"] * s_val + s_end)
    return {
        "arch": arch, "graphs": graphs, "step": mode, "validation": val_mode, "batch": batch,
        "train_images_per_s": round(batch / s_batch, 1), "val_batches_per_s": round(1 / s_val, 1),
        "epoch_work_s": round(s_end, 4), "last_write_wait_s": round(last_write_s, 4), "train_s_per_batch": s_batch, "val_s_per_batch": s_val,
        "epochs_timed": epochs, "warmup_s": round(warmup, 2), "protocol_hours": round(protocol_s / 3600, 3),
        "final_loss": round(float(loss), 5), "peak_gpu_bytes": peak,
        "notes": [line for line in lines if "CUDA graphs" in line],
    }


def machine() -> dict[str, Any]:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, gpus=torch.cuda.device_count())
    return info


def sweep(rows: list[dict[str, Any]], settings: list[str]) -> dict[str, Any]:
    """Hours of the Table I sweep (11 networks, full protocol, one after another) per graphs setting."""
    out = {}
    for g in settings:
        done = [r for r in rows if r.get("graphs") == g and "protocol_hours" in r]
        out[g] = {"hours": round(sum(r["protocol_hours"] for r in done), 2), "networks": len(done),
                  "complete": len(done) == len(list_models())}
    return out


def packed(arch: str, graphs: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """``n`` measurements of one network at once, each its own process, timed together."""
    with tempfile.TemporaryDirectory(prefix="aubench-pack-") as tmp:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cache", args.cache, "--device", args.device,
               "--arch", arch, "--graphs", graphs, "--seconds", str(args.seconds), "--json", "--aug", args.aug,
               "--batches-per-epoch", str(args.batches_per_epoch), "--val-batches", str(args.val_batches),
               "--pos-per-au", str(args.pos_per_au), "--neg-per-au", str(args.neg_per_au),
               "--barrier", str(Path(tmp) / "barrier"), "--barrier-count", str(n)]
        if args.folds:
            cmd += ["--folds", str(args.folds), "--fold", str(args.fold)]
        if args.no_amp:
            cmd.append("--no-amp")
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd + ["--seed", str(i)], stdout=subprocess.PIPE, text=True) for i in range(n)]
        outs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
    runs = []
    for p, out in zip(procs, outs):
        try:
            runs.append(json.loads(out)["networks"][0])
        except (json.JSONDecodeError, KeyError, IndexError):
            runs.append({"error": f"exit {p.returncode}"})
    ok = [r for r in runs if "train_images_per_s" in r]
    return {"arch": arch, "graphs": graphs, "runs_at_once": n, "wall_s": round(wall, 1),
            "aggregate_train_images_per_s": round(sum(r["train_images_per_s"] for r in ok), 1),
            "per_run_train_images_per_s": [r.get("train_images_per_s") for r in runs],
            "aggregate_protocol_runs_per_hour": round(sum(1 / r["protocol_hours"] for r in ok), 3) if ok else None,
            "errors": [r["error"] for r in runs if "error" in r]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="cache written by aubench preprocess")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default="all", help="comma-separated networks, or all (Table I's 11)")
    ap.add_argument("--graphs", default="on,off", help="comma-separated train.cuda_graphs settings to compare")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement (after warm-up)")
    ap.add_argument("--batches-per-epoch", type=int, default=50)
    ap.add_argument("--val-batches", type=int, default=50)
    ap.add_argument("--pos-per-au", type=int, default=4)
    ap.add_argument("--neg-per-au", type=int, default=4)
    ap.add_argument("--aug", default="D")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=None, help="train on folds (a cache whose own val split is empty)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (default: bf16 autocast, as aubench train)")
    ap.add_argument("--pack", type=int, default=0, help="also run N copies at once per network and graphs setting")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run; later measurements skipped")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--json-out", default=None, help="also write the JSON here after every measurement")
    ap.add_argument("--barrier", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--barrier-count", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    archs = list_models() if args.arch == "all" else [a.strip() for a in args.arch.split(",") if a.strip()]
    settings = [g.strip() for g in args.graphs.split(",") if g.strip()]
    began = time.monotonic()
    result: dict[str, Any] = {"machine": machine(), "protocol": PROTOCOL,
                              "settings": {k: v for k, v in vars(args).items() if not k.startswith("barrier")},
                              "networks": [], "sweep": {}, "packed": []}

    def save() -> None:
        result["sweep"] = sweep(result["networks"], settings)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2))

    def over_budget() -> bool:
        return args.budget is not None and time.monotonic() - began > args.budget

    for g in settings:  # one setting for every network first: a --budget cuts the last setting, not networks
        for arch in archs:
            if over_budget():
                result["networks"].append({"arch": arch, "graphs": g, "error": "skipped: --budget reached"})
                continue
            try:
                row = measure(arch, g, args)
                say(f"{arch:12s} graphs {g:4s} ({row['step']}): {row['train_images_per_s']:>9,.0f} train images/s, "
                    f"{row['val_batches_per_s']:>7,.1f} val batches/s, full protocol {row['protocol_hours']:.2f} h "
                    f"(warm-up {row['warmup_s']:.1f} s)")
            except Exception as exc:  # noqa: BLE001 - one network's failure must not lose the others
                row = {"arch": arch, "graphs": g, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                say(f"{arch:12s} graphs {g:4s}: FAILED {row['error']}")
            finally:  # the run's graphs and their memory pools go before the next network
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            result["networks"].append(row)
            save()
    for arch in archs if args.pack > 1 else []:
        for g in settings:
            if over_budget():
                continue
            row = packed(arch, g, args.pack, args)
            say(f"{arch:12s} graphs {g:4s} x{args.pack} at once: {row['aggregate_train_images_per_s']:,.0f} "
                f"train images/s in all {row['errors'] or ''}")
            result["packed"].append(row)
            save()
    save()
    for g, s in result["sweep"].items():
        say(f"Table I sweep, graphs {g}: {s['hours']:.2f} h over {s['networks']} networks"
            + ("" if s["complete"] else " (not all 11 measured)"))
    if args.json:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
