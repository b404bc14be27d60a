"""The optimizers a run can use, and the forms of them a CUDA graph can capture.

A captured training step must not read anything back to the host. ``torch.optim.Adam`` has a ``capturable`` flag
(its step count stays on the device); ``torch.optim.Adagrad`` has none: both its single-tensor and its foreach
forms read the step count to the host (``.item()``) to compute the decayed rate, and its fused form is for the
CPU. ``CapturableAdagrad`` is the same optimizer (a subclass: same arguments, same ``state_dict``, so a checkpoint
written by one loads into the other) whose step is written with foreach ops on device tensors only, in the order
torch's foreach form uses: ``step += 1``; ``g += weight_decay * p``; ``sum += g * g``; ``p += g * (-clr) / (sqrt(sum)
+ eps)`` with ``clr = lr / (1 + (step - 1) * lr_decay)`` computed on the device. ``make_optimizer`` builds the
plain optimizer for the eager path and the capturable one when the step is captured (or emulated: the same code
without capture, on any device).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from aubench_cli.errors import UsageError, suggest

OPTIMIZERS = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class CapturableAdagrad(torch.optim.Adagrad):
    """``torch.optim.Adagrad`` with a step that a CUDA graph can capture (no host sync): see the module doc.

    Step counts live on each parameter's device (moved there at construction and after ``load_state_dict``);
    sparse and complex parameters are not supported (no network here has them).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, maximize: bool = False):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        self.steps_to_device()

    def steps_to_device(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and torch.is_tensor(state.get("step")) and state["step"].device != p.device:
                    state["step"] = state["step"].to(device=p.device, dtype=torch.float32)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.steps_to_device()

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, sums, steps = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse or torch.is_complex(p):
                    raise RuntimeError("CapturableAdagrad supports dense real parameters only")
                state = self.state[p]
                params.append(p)
                grads.append(p.grad)
                sums.append(state["sum"])
                steps.append(state["step"])
            if params:
                capturable_adagrad(params, grads, sums, steps, lr=group["lr"], lr_decay=group["lr_decay"],
                                   weight_decay=group["weight_decay"], eps=group["eps"],
                                   maximize=group.get("maximize", False))
        return loss


def capturable_adagrad(params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor],
                       steps: list[torch.Tensor], *, lr: float, lr_decay: float, weight_decay: float, eps: float,
                       maximize: bool = False) -> None:
    """One Adagrad update of every parameter, device ops only (torch's foreach Adagrad, with the rate on device)."""
    torch._foreach_add_(steps, 1)
    if maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_addcmul_(sums, grads, grads, value=1)
    std = torch._foreach_sqrt(sums)
    torch._foreach_add_(std, eps)
    if lr_decay == 0:  # clr = lr at every step: a constant of the graph, as torch's own -lr
        numerator = torch._foreach_mul(grads, -lr)
    else:  # -clr = -lr / (1 + (step - 1) * lr_decay), one 0-dim tensor per parameter, on its device
        denominator = torch._foreach_sub(steps, 1)
        torch._foreach_mul_(denominator, lr_decay)
        torch._foreach_add_(denominator, 1)
        minus_clr = torch._foreach_reciprocal(denominator)
        torch._foreach_mul_(minus_clr, -lr)
        numerator = torch._foreach_mul(grads, minus_clr)
    torch._foreach_addcdiv_(params, numerator, std)


def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r}", suggest(name, OPTIMIZERS))
    return name


def make_optimizer(name: str, params: Iterable[Any], lr: float, *, capturable: bool = False,
                   device: torch.device | None = None) -> torch.optim.Optimizer:
    """The run's optimizer: torch's own, or its capturable form (Adagrad: ``CapturableAdagrad`` on any device;
    Adam: ``capturable=True`` on CUDA, where torch supports it; SGD without momentum holds no state)."""
    check_optimizer(name)
    if capturable and name == "adagrad":
        return CapturableAdagrad(params, lr=lr)
    if capturable and name == "adam" and device is not None and device.type == "cuda":  # CUDA only
        return torch.optim.Adam(params, lr=lr, capturable=True)
    return OPTIMIZERS[name](params, lr=lr)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state whatever form wrote it (eager or captured; CPU or CUDA): the saved
    param groups carry Adam's ``capturable`` flag, which must stay what this run's optimizer was built with, and a
    capturable optimizer needs its step counts on the parameters' device."""
    wanted = [group.get("capturable") for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flag in zip(optimizer.param_groups, wanted):
        if flag is None:  # Adagrad, SGD: no such flag (CapturableAdagrad moves its own steps)
            continue
        group["capturable"] = flag
        for p in group["params"]:
            p_state = optimizer.state.get(p, {})
            if torch.is_tensor(p_state.get("step")):
                p_state["step"] = p_state["step"].to(p.device if flag else "cpu", dtype=torch.float32)
