"""The training step and validation replayed as CUDA graphs (``train.cuda_graphs``: auto, on, off).

At batch 96 on 96x96 crops a step is a few hundred small kernels, so on a fast GPU the step waits on Python and
kernel launches, not on arithmetic. Captured once as a CUDA graph (gather, convert, augment, normalize, forward,
backward, optimizer step), a step is then one launch. A graph replays fixed kernels on fixed addresses, so:

* **Static buffers.** The step reads its batch from static device tensors: frame positions in the device-resident
  frame store, augmentation parameters, targets and loss weights. Before each step, that step's row is copied
  (``copy_``) into them from the **epoch buffers**: the whole epoch's draws made ahead, on the host, by the same
  ``BatchPlan.draw`` the eager path calls per step, and moved to the device in one copy. So the same seed trains
  on the same batches and augmentation parameters with or without graphs, and the results differ only by
  floating-point order (the capturable optimizers' update order, bf16 kernels chosen under capture).
* **No host sync inside.** The optimizer's step counts stay on the device: Adam with ``capturable=True``, Adagrad
  as ``optim.CapturableAdagrad``. The dropout stream is the CUDA generator's seed, set per step before the replay
  (``torch.manual_seed``, as the eager path does); torch's graph-safe Philox reads the seed and offset at replay.
* **The recipe of torch.cuda.graphs.** The first ``WARMUP_STEPS`` steps of the run run eagerly on a side stream
  (real steps of the run, not throw-away ones: warm-up must not change the experiment), the gradients are set to
  None, the next step is captured (``torch.cuda.graph``: backward allocates the gradients from the graph's private
  pool, and every replay writes them afresh) and replayed, and so is every later step. Autocast runs with
  ``cache_enabled=False`` (its weight-cast cache must not outlive a capture).
* **Validation** is its own graph, captured in eval mode: every validation batch has the same shape (balanced
  batches of ``8 x K``), so each replay gathers ``val_group`` batches (up to 8) and adds their per-AU correct and total counts to device
  accumulators; the host reads them once per epoch.

What cannot be captured falls back to the eager step with one log line saying why (``choose_mode``): a device that
is not CUDA, DDP, ``--compile``, frames that do not fit in GPU memory. A capture that fails (an op that syncs, a
library that refuses capture) is caught, logged in one line, and the run continues eagerly from the same step.
``emulate`` (tests and the CPU benchmark) runs the static-buffer code path, capturable optimizer included, without
capture, on any device: the CPU suite checks it trains to the same weights as the plain step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aubench_cli.errors import UsageError
from aubench_cli.training.sampling import correct_counts, weighted_bce
from aubench_cli.training.transforms import normalize, to_float

CHOICES = ("auto", "on", "off")  # what a user chooses (--cuda-graphs)
SETTINGS = (*CHOICES, "emulate")  # emulate: the static-buffer path without capture (tests, the CPU benchmark)
WARMUP_STEPS = 3  # eager steps on a side stream before capture (torch's recipe: lazy inits happen outside it)
VAL_WARMUP_BATCHES = 2
VAL_GROUP_MAX = 8  # validation batches per forward pass in the graph (the largest divisor of their count up to this)

LogFn = Callable[[str], None]


def check_setting(value: str | bool) -> str:
    """The setting's name (YAML's on/off arrive as booleans)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in SETTINGS:
        raise UsageError(f"unknown train.cuda_graphs {value!r}", "use auto, on or off")
    return value


def choose_mode(setting: str, device: torch.device, *, world: int = 1, compiled: bool = False,
                frames_where: str = "device", log: LogFn = lambda msg: None) -> str:
    """``capture``, ``emulate`` or ``off`` for a run; one log line when graphs were asked for (``on``, or
    ``auto`` on CUDA) and cannot be used."""
    setting = check_setting(setting)
    if setting == "off":
        return "off"
    if setting == "emulate":
        reason = "the frames are read from disk per batch" if frames_where == "disk" else None
    elif device.type != "cuda":
        if setting == "auto":
            return "off"  # the default on the CPU: nothing to say
        reason = f"the device is {device}, not CUDA"
    elif world > 1:
        reason = f"DDP across {world} processes (its gradient all-reduce is not captured here)"
    elif compiled:
        reason = "--compile (torch.compile has its own graphs: --set train.cuda_graphs=off, or drop --compile)"
    elif frames_where != "device":
        reason = f"the frames do not fit in GPU memory (held in {frames_where}); the step gathers them on the device"
    else:
        reason = None
    if reason is not None:
        log(f"CUDA graphs off: {reason}; training eagerly")
        return "off"
    return setting if setting == "emulate" else "capture"


def graph_autocast(device: torch.device, amp: bool) -> Any:
    """bf16 autocast as the eager step has it, without the weight-cast cache (which must not outlive a capture)."""
    if device.type == "cuda" and amp:  # CUDA only
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------------------
# one epoch's draws, made ahead


@dataclass
class EpochBuffers:
    """Steps ``start .. start + len(seeds) - 1`` of the run, drawn ahead: row j is step ``start + j``."""

    start: int
    frames: torch.Tensor  # (S, b) int64 positions in the frame store (cache indices mapped through its lookup)
    aug: torch.Tensor | None  # (S, b, len(PARAMS)) float32, or None (group A)
    targets: torch.Tensor  # (S, b, K) int8
    weights: torch.Tensor  # (S, b, K) float
    seeds: list[int]  # the torch seed of each step (dropout)
    fixed_targets: bool  # balanced batches: targets and weights are the same every step


def prepare_epoch(plan: Any, lookup: np.ndarray | None, start: int, count: int, device: torch.device,
                  frames_device: torch.device | None = None) -> EpochBuffers:
    """Draw steps ``start .. start + count - 1`` exactly as ``BatchPlan.__call__`` does, as device tensors.

    ``lookup`` maps cache indices to positions in the frame store (``FrameSource.lookup``); None keeps cache
    indices. One host-to-device copy per tensor, then nothing per step but the copies into the static buffers.
    """
    idx, aug, targets, weights, seeds = [], [], [], [], []
    fixed = True
    for step in range(start, start + count):
        frames, t, params, seed = plan.draw(step)
        idx.append(frames[plan.rows])
        if params is not None:
            aug.append(params[plan.rows])
        t_dev, w_dev = plan._targets_and_weights(t)  # noqa: SLF001 - the plan's own rows and weights
        fixed = fixed and t is getattr(plan.sampler, "targets", None)
        targets.append(t_dev)
        weights.append(w_dev)
        seeds.append(seed)
    frames_np = np.stack(idx)
    if lookup is not None:
        frames_np = lookup[frames_np]
    to = dict(device=device, non_blocking=True)
    return EpochBuffers(
        start=start, frames=torch.from_numpy(frames_np).to(frames_device or device, non_blocking=True),
        aug=torch.from_numpy(np.stack(aug)).to(**to) if aug else None,
        targets=torch.stack([t.to(device) for t in targets]), weights=torch.stack([w.to(device) for w in weights]),
        seeds=seeds, fixed_targets=fixed)


# ----------------------------------------------------------------------------------------------------------------
# the training step


class _Captured:
    """What the training step and validation share: capture-or-eager bookkeeping, a side stream, the fallback."""

    what = "step"

    def __init__(self, mode: str, device: torch.device, log: LogFn):
        self.capture = mode == "capture"
        self.device = device
        self.log = log
        self.graph: Any = None
        self.failed = False
        self.eager_runs = 0
        self.side = torch.cuda.Stream(device) if self.capture else None  # CUDA only

    def _eager(self, body: Callable[[], Any]) -> Any:
        self.eager_runs += 1
        if self.side is None:
            return body()
        current = torch.cuda.current_stream(self.device)  # CUDA only: torch's recipe runs warm-up on a side stream
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            out = body()
        current.wait_stream(self.side)
        return out

    def _try_capture(self, body: Callable[[], Any], before: Callable[[], None]) -> Any:
        """Capture ``body`` once (not run: the caller replays it); None and one log line when capture fails."""
        before()
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize(self.device)
            with torch.cuda.graph(graph, stream=self.side):  # the warm-up's stream (as make_graphed_callables)
                out = body()
        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to the eager step
            self.failed = True
            before()
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(self.device)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.log(f"CUDA graphs off: capturing the {self.what} failed ({type(exc).__name__}: {first}); "
                     "continuing eagerly")
            return None
        self.graph = graph
        return out

    def _due(self, warmup: int) -> bool:
        return self.capture and not self.failed and self.graph is None and self.eager_runs >= warmup

    @property
    def state(self) -> str:
        return "captured" if self.graph is not None else ("failed" if self.failed else
                                                          ("warming up" if self.capture else "emulated"))


class GraphStep(_Captured):
    """The training step on static buffers: ``begin_epoch`` draws the epoch ahead, ``__call__(global_step)``
    copies that step's row into the buffers and replays the graph (or runs the same body eagerly)."""

    def __init__(self, step: Any, plan: Any, mode: str, device: torch.device, amp: bool, log: LogFn):
        super().__init__(mode, device, log)
        if step.source.store is None:
            raise ValueError("the static-buffer step needs the frames held in memory (FrameSource.store)")
        self.step, self.plan = step, plan
        self.store, self.lookup = step.source.store, step.source.lookup
        self.autocast = graph_autocast(device, amp)
        self.epoch: EpochBuffers | None = None
        self.frames = self.aug = self.targets = self.weights = None  # the static buffers, made at the first epoch
        self.loss: torch.Tensor | None = None
        self.ahead: EpochBuffers | None = None  # the next epoch, drawn while this one's last steps run
        self.ahead_count: int | None = None
        self.end: int | None = None

    def begin_epoch(self, start: int, count: int, steps_per_epoch: int | None = None, end: int | None = None) -> None:
        """Draw steps ``start .. start + count - 1`` (the rest of the epoch) ahead, on the store's device.

        With ``steps_per_epoch`` the next epoch (up to global step ``end``) is drawn as soon as this epoch's last
        step is queued, while the GPU still works through the queue, so the draws cost no GPU time."""
        self.ahead_count = steps_per_epoch
        self.end = end
        ahead, self.ahead = getattr(self, "ahead", None), None
        if ahead is not None and ahead.start == start and len(ahead.seeds) == count:
            epoch = ahead
        else:
            epoch = prepare_epoch(self.plan, self.lookup, start, count, self.device, self.store.device)
        if self.frames is None:
            self.frames = torch.empty_like(epoch.frames[0])
            self.aug = None if epoch.aug is None else torch.empty_like(epoch.aug[0])
            self.targets = epoch.targets[0].clone()
            self.weights = epoch.weights[0].clone()
        self.epoch = epoch

    def __call__(self, global_step: int) -> torch.Tensor:
        epoch = self.epoch
        j = global_step - epoch.start
        torch.manual_seed(epoch.seeds[j])
        self.frames.copy_(epoch.frames[j], non_blocking=True)
        if self.aug is not None:
            self.aug.copy_(epoch.aug[j], non_blocking=True)
        if not epoch.fixed_targets:
            self.targets.copy_(epoch.targets[j], non_blocking=True)
            self.weights.copy_(epoch.weights[j], non_blocking=True)
        if self.graph is None and self._due(WARMUP_STEPS):
            self.loss = self._try_capture(self._body, self._grads_to_none)
        if self.graph is not None:
            self.graph.replay()
            loss = self.loss
        else:
            loss = self._eager(self._body)
        if j == len(epoch.seeds) - 1 and self.ahead_count:
            start = epoch.start + len(epoch.seeds)
            count = self.ahead_count if self.end is None else min(self.ahead_count, self.end - start)
            if count > 0:
                self.ahead = prepare_epoch(self.plan, self.lookup, start, count, self.device, self.store.device)
        return loss

    def _grads_to_none(self) -> None:
        self.step.optimizer.zero_grad(set_to_none=True)

    def _body(self) -> torch.Tensor:
        s = self.step
        s.optimizer.zero_grad(set_to_none=True)  # eager: frees last step's gradients; captured: they are None
        x = to_float(torch.index_select(self.store, 0, self.frames).to(self.device, non_blocking=True))
        if self.aug is not None and s.augmentation is not None:
            x = s.augmentation(x, self.aug)
        x = normalize(x, s.norm, s.stats)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            logits = s.model(x)
        loss = weighted_bce(logits, self.targets, self.weights)
        loss.backward()
        s.optimizer.step()
        return loss.detach()


def val_group(count: int, most: int = VAL_GROUP_MAX) -> int:
    """How many validation batches one forward pass takes: the largest divisor of ``count`` up to ``most``."""
    return max(g for g in range(1, min(most, count) + 1) if count % g == 0)


class GraphValidation(_Captured):
    """Validation on static buffers: one gather + forward + per-AU counts per replay, counts summed on the device.

    The model is in eval mode, so a frame's logits do not depend on the rest of its batch: ``val_group`` batches
    go through the network as one (300 batches of 96: 6 at a time, 50 replays of 576 frames), which fills the GPU
    better and gives the same counts, which are sums over frames.
    """

    what = "validation"

    def __init__(self, step: Any, val_batches: list[np.ndarray], targets: torch.Tensor, mode: str,
                 device: torch.device, amp: bool, log: LogFn):
        super().__init__(mode, device, log)
        self.step = step
        self.store, lookup = step.source.store, step.source.lookup
        self.autocast = graph_autocast(device, amp)
        self.group = val_group(len(val_batches))
        stacked = lookup[np.stack(val_batches)]  # (n, b): G batches per forward pass, as one (n / G, G * b)
        self.batches = torch.from_numpy(stacked.reshape(len(val_batches) // self.group, -1)).to(self.store.device)
        self.frames = self.batches[0].clone()
        self.targets = targets.repeat(self.group, 1)  # every validation batch has the same (balanced) targets
        k = targets.shape[1]
        self.correct = torch.zeros(k, dtype=torch.float64, device=targets.device)
        self.total = torch.zeros(k, dtype=torch.float64, device=targets.device)

    def __call__(self) -> np.ndarray:
        """Per-AU accuracy over the validation batches (the model is put in eval mode)."""
        self.step.model.eval()
        self.correct.zero_()
        self.total.zero_()
        for v in range(len(self.batches)):
            self.frames.copy_(self.batches[v], non_blocking=True)
            if self.graph is None and self._due(VAL_WARMUP_BATCHES):
                self._try_capture(self._body, lambda: None)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._eager(self._body)
        return (self.correct / self.total.clamp(min=1)).cpu().numpy()

    def _body(self) -> None:
        s = self.step
        with torch.no_grad():
            frames = torch.index_select(self.store, 0, self.frames).to(self.device, non_blocking=True)
            x = normalize(to_float(frames), s.norm, s.stats)
            if s.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast:
                logits = s.model(x)
            c, n = correct_counts(logits.float(), self.targets)
            self.correct += c
            self.total += n
