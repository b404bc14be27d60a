"""Several runs per GPU: which pending run goes to which device, how many at once, and whether they fit.

Small networks leave most of a large GPU idle (the baseline at batch 96 uses a few percent of an H200), so a study
can pack runs: ``aubench study --launcher local --runs-per-device N`` starts N *slots* per visible GPU, each a
process pinned to its GPU (``CUDA_VISIBLE_DEVICES``) that trains its share of the pending runs one after another;
so N runs train at once on every GPU until the study is done. Runs are dealt round-robin to the slots, and slots
to the GPUs in turn, so the GPUs get equal shares. With ``--launcher slurm`` a job of the array is one GPU and N
tasks (``ntasks_per_node=N``), each training one run, all on that GPU.

Memory is checked before packing (local launcher: the GPUs are here): a run needs about its frames (held in GPU
memory when they fit) plus ``RUN_GPU_BYTES`` (CUDA context, network, optimizer state, activations of a batch of
96); when N of them do not fit in a GPU's free memory, fewer are packed, with one line saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aubench_cli.errors import UsageError

GiB = 1024**3
# CUDA context (~0.5 GiB), weights + optimizer state + bf16 activations of a batch of 96 at 96x96: the largest
# of the 11 networks (densenet121, vgg16) stays under 3 GiB at the paper's batch; a margin on top
RUN_GPU_BYTES = 4 * GiB
USABLE_FRACTION = 0.9  # of a GPU's free memory: the allocator's fragmentation and the driver's own

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class Slot:
    """One process: the GPU it is pinned to and the runs (indices into the pending list) it trains in turn."""

    device: int
    runs: tuple[int, ...]


def plan_slots(n_runs: int, devices: int, per_device: int) -> list[Slot]:
    """``per_device`` slots on each of ``devices`` GPUs (fewer when there are fewer runs); run i goes to slot
    i mod S, and slot s to GPU s mod devices, so every GPU gets an equal share and N run at once on each."""
    if devices < 1 or per_device < 1:
        raise ValueError("plan_slots needs at least one device and one run per device")
    n_slots = min(n_runs, devices * per_device)
    return [Slot(s % devices, tuple(range(s, n_runs, n_slots))) for s in range(n_slots)]


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def free_memory(device: int) -> int:
    import torch

    return int(torch.cuda.mem_get_info(device)[0])  # CUDA only


def run_bytes(cache: str | Path) -> int:
    """GPU memory one run needs: its cache's frames (resident on the GPU when they fit) plus ``RUN_GPU_BYTES``."""
    from aubench_cli.data.cache import open_cache

    try:
        frames = int(open_cache(cache).images.nbytes)
    except Exception:  # noqa: BLE001 - an unreadable cache fails later with its own message
        frames = 0
    return frames + RUN_GPU_BYTES


def runs_that_fit(requested: int, need: int, free: list[int], log: LogFn = lambda msg: None) -> int:
    """How many runs of ``need`` bytes to pack per GPU: ``requested``, or fewer (one line) when the GPU with the
    least free memory cannot hold them; refused when not even one fits."""
    fit = min(int(USABLE_FRACTION * f) // need for f in free)
    worst = min(range(len(free)), key=lambda i: free[i])
    if fit < 1:
        raise UsageError(f"--runs-per-device: one run needs about {need / GiB:.1f} GiB of GPU memory and cuda:{worst} "
                         f"has {free[worst] / GiB:.1f} GiB free", "free the GPU, or run the study without packing")
    if fit < requested:
        log(f"--runs-per-device {requested}: only {fit} runs of about {need / GiB:.1f} GiB fit in the "
            f"{free[worst] / GiB:.1f} GiB free on cuda:{worst}; packing {fit} per GPU")
        return fit
    return requested


def local_plan(n_runs: int, requested: int, caches: list[str], log: LogFn = lambda msg: None) -> list[Slot]:
    """The slots of a packed local study: the visible GPUs, their free memory, then ``plan_slots``."""
    devices = visible_gpus()
    if devices == 0:
        raise UsageError("--runs-per-device packs runs on GPUs, and no CUDA GPU is visible",
                         "leave out --runs-per-device (runs then go one after another), or run on a GPU machine")
    need = max((run_bytes(c) for c in caches), default=RUN_GPU_BYTES)
    per = runs_that_fit(requested, need, [free_memory(d) for d in range(devices)], log)
    return plan_slots(n_runs, devices, per)
