"""Several training seeds of one network in one process (torch.func: ``stack_module_state`` + ``vmap``) against
the same seeds stepped one after another: the measurement issue 23 asks for before choosing this over packing.

    python benchmarks/vmap_seeds.py [--device cuda] [--arch baseline] [--seeds 4] [--steps 20] [--rounds 3]
                                    [--json-out FILE]

What it times is the model step alone, as the issue's prototype did: forward, the paper's per-AU BCE over a
balanced batch (8 x 12 grey 96x96 crops, random, one batch per seed), backward and Adagrad (lr 0.005, the update
aubench's capturable Adagrad makes), eager; sampling and augmentation are left out (they are per run either way).
Only networks without BatchNorm and dropout qualify (the baseline and EmoNets): their functional step is the
module's own. First it checks that the vmapped step computes each seed's own gradient (in float64, where the two
agree to rounding, and as timed), then it times ``--rounds`` interleaved
rounds of ``--steps`` steps: N plain models stepped in turn, one vmapped step of all N. On CUDA, bf16 autocast and
channels_last as the trainer uses them (``--amp off`` to leave autocast out); a variant that fails is reported with
its error, not fatal. Figures: median (min-max) images/s over the rounds, all seeds together.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.func import functional_call, grad, stack_module_state, vmap  # noqa: E402

from aubench_cli.models.registry import create_model  # noqa: E402
from aubench_cli.training.optim import capturable_adagrad  # noqa: E402
from aubench_cli.training.sampling import loss_weights, weighted_bce  # noqa: E402

AUS, PER_AU, LR = 12, 8, 0.005


def _batch(seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A balanced batch: for each AU, 4 frames coded 1 and 4 coded 0 for it (-1: not counted for the others)."""
    g = torch.Generator().manual_seed(1000 + seed)
    n = AUS * PER_AU
    x = torch.rand(n, 1, 96, 96, generator=g)
    t = torch.full((n, AUS), -1.0)
    for k in range(AUS):
        t[k * PER_AU:(k + 1) * PER_AU, k] = torch.tensor([1.0] * (PER_AU // 2) + [0.0] * (PER_AU // 2))
    return x.to(device), t.to(device), loss_weights(t).to(device)


class Plain:
    """N models, each with its own Adagrad state, stepped in turn."""

    def __init__(self, models: list[torch.nn.Module]):
        self.models = models
        self.sums = [[torch.zeros_like(p) for p in m.parameters()] for m in models]
        self.steps = [[torch.zeros((), device=p.device) for p in m.parameters()] for m in models]

    def step(self, batches, autocast, update: bool = True) -> None:
        for model, sums, steps, (x, t, w) in zip(self.models, self.sums, self.steps, batches):
            params = list(model.parameters())
            for p in params:
                p.grad = None
            with autocast():
                loss = weighted_bce(model(x), t, w)
            loss.backward()
            if update:
                with torch.no_grad():
                    capturable_adagrad(params, [p.grad for p in params], sums, steps, lr=LR, lr_decay=0.0,
                                       weight_decay=0.0, eps=1e-10)


class Vmapped:
    """The same N models as one stacked set of parameters; one vmapped gradient and one foreach update per step."""

    def __init__(self, models: list[torch.nn.Module]):
        params, self.buffers = stack_module_state(models)
        self.params = {k: v.detach() for k, v in params.items()}
        self.names = list(self.params)
        self.sums = [torch.zeros_like(v) for v in self.params.values()]
        self.steps = [torch.zeros((), device=v.device) for v in self.params.values()]
        base = copy.deepcopy(models[0]).to("meta")

        def loss(p, b, x, t, w):
            return weighted_bce(functional_call(base, (p, b), (x,)), t, w)

        self.grads = vmap(grad(loss))

    def gradients(self, batches, autocast) -> dict[str, torch.Tensor]:
        x, t, w = (torch.stack(parts) for parts in zip(*batches))
        with autocast():
            return self.grads(self.params, self.buffers, x, t, w)

    def step(self, batches, autocast) -> None:
        g = self.gradients(batches, autocast)
        with torch.no_grad():
            capturable_adagrad([self.params[k] for k in self.names], [g[k] for k in self.names], self.sums,
                               self.steps, lr=LR, lr_decay=0.0, weight_decay=0.0, eps=1e-10)

    def weights_of(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.params.items()}


def _models(arch: str, seeds: int, device: torch.device, channels_last: bool) -> list[torch.nn.Module]:
    out = []
    for s in range(seeds):
        torch.manual_seed(s)
        model = create_model(arch, AUS).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        out.append(model.train())
    return out


def _timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="baseline", choices=["baseline", "emonets"])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--amp", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--json-out")
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = args.amp == "on" or (args.amp == "auto" and device.type == "cuda")

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    channels_last = device.type == "cuda"
    batches = [_batch(s, device) for s in range(args.seeds)]
    result: dict[str, Any] = {"device": str(device), "arch": args.arch, "seeds": args.seeds, "steps": args.steps,
                              "amp": amp, "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}

    # 1. the same step: each seed's first gradient, vmapped against its own plain run's, in float64 (where the two
    # are the same computation, they agree to ~1e-15) and in float32 as timed (there the batched convolutions sum in
    # another order, and a max-pool window whose top two values are that close sends its gradient elsewhere: a
    # difference of float order, not of method). Relative L2 distance per tensor, the largest over tensors and seeds.
    try:
        def gap(dtype: torch.dtype, cast) -> float:
            models = [m.to(dtype) for m in _models(args.arch, args.seeds, device, channels_last)]
            twins = [m.to(dtype) for m in _models(args.arch, args.seeds, device, channels_last)]
            data = [tuple(part.to(dtype) for part in b) for b in batches]
            plain, stacked = Plain(models), Vmapped(twins)
            plain.step(data, cast, update=False)
            g = stacked.gradients(data, cast)
            return max(float((g[k][i] - q.grad).norm() / q.grad.norm().clamp(min=1e-30))
                       for i, m in enumerate(plain.models) for k, q in m.named_parameters())

        result["grad_gap_float64"] = gap(torch.float64, contextlib.nullcontext)
        result["grad_gap_as_timed"] = gap(torch.float32, autocast)
        print(f"{args.arch}, {args.seeds} seeds on {device}: each seed's gradient, vmapped vs its plain run, relative "
              f"L2 gap at most {result['grad_gap_float64']:.1e} in float64, {result['grad_gap_as_timed']:.1e} as timed "
              f"({'bf16 autocast' if amp else 'float32'})", flush=True)
        plain, stacked = Plain(_models(args.arch, args.seeds, device, channels_last)), \
            Vmapped(_models(args.arch, args.seeds, device, channels_last))
        for _ in range(2):  # warm-up
            plain.step(batches, autocast)
            stacked.step(batches, autocast)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal: the point is to learn whether it works here
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"vmapped step failed: {result['error']}", flush=True)
    else:
        # 2. interleaved timing rounds
        times: dict[str, list[float]] = {"plain": [], "vmap": []}
        images = args.steps * args.seeds * AUS * PER_AU
        for _ in range(args.rounds):
            for name, runner in (("plain", plain), ("vmap", stacked)):
                times[name].append(images / _timed(lambda r=runner: r.step(batches, autocast), args.steps, device))
        for name, values in times.items():
            result[f"{name}_images_per_s"] = {"median": statistics.median(values), "min": min(values),
                                              "max": max(values)}
        p, v = (statistics.median(times[n]) for n in ("plain", "vmap"))
        result["speedup"] = v / p
        print(f"images/s, {args.seeds} seeds together: plain in turn {p:,.0f} ({min(times['plain']):,.0f}-"
              f"{max(times['plain']):,.0f}), vmapped {v:,.0f} ({min(times['vmap']):,.0f}-{max(times['vmap']):,.0f}): "
              f"{v / p:.2f}x", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
