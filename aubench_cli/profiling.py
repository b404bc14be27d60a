"""Cost of a network: parameters, MACs, FLOPs and memory in the paper's conventions, and measured speed.

Two counts come from one fvcore trace each. MACs are fvcore's own ``FlopCountAnalysis`` (one fused
multiply-add counts 1). FLOPs and memory follow the paper's Table I (TensorFlow-profiler conventions; see
docs/architectures.md): conv and linear cost 2 x MACs plus one add per output element for a bias; max/avg pools
cost kernel_h x kernel_w per output element; global average pooling costs its input elements; residual adds and
LightCNN's max-feature-map max cost one per output element; BatchNorm and activations cost nothing. Memory is
4 bytes x (Keras-counted parameters + the output elements of every conv, pool and dense layer for one image).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # fvcore scripts its focal loss at import (torch.jit.script)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_analysis import JitModelAnalysis
    from fvcore.nn.jit_handles import get_shape

from aubench_cli.device import resolve_device
from aubench_cli.errors import UsageError
from aubench_cli.models import check_layout, create_model, get_model_info, list_models

# The paper's Table I: FLOPs, #params (Keras counts), memory in MB (10^6 bytes), for 96x96 inputs.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "baseline": {"flops": 81.6e6, "params": 659e3, "memory_mb": 4.71},
    "mobilenetv2": {"flops": 110.1e6, "params": 2276e3, "memory_mb": 16.44},
    "inceptionv3": {"flops": 679.2e6, "params": 21831e3, "memory_mb": 91.41},
    "emonets": {"flops": 739.4e6, "params": 567e3, "memory_mb": 6.32},
    "densenet121": {"flops": 1040e6, "params": 7052e3, "memory_mb": 49.15},
    "lightcnn9": {"flops": 1100e6, "params": 3649e3, "memory_mb": 31.76},
    "resnet50": {"flops": 1420e6, "params": 23587e3, "memory_mb": 102.95},
    "xception": {"flops": 1650e6, "params": 20890e3, "memory_mb": 101.07},
    "lightcnn29": {"flops": 4080e6, "params": 10741e3, "memory_mb": 72.22},
    "facevgg": {"flops": 5640e6, "params": 14721e3, "memory_mb": 69.97},
    "vgg16": {"flops": 5640e6, "params": 14721e3, "memory_mb": 69.97},
}
# The paper's parameter counts fit a final layer of 14 outputs (docs/architectures.md, "the 14-output finding").
PAPER_OUTPUTS = 14
BYTES_PER_VALUE = 4  # float32


def _numel(shape: list[int] | None) -> int:
    return math.prod(shape) if shape else 0


def _has_bias(value: Any) -> bool:
    return not isinstance(value.type(), torch._C.NoneType)


def _conv(inputs: list, outputs: list) -> Counter:
    out = _numel(get_shape(outputs[0]))
    weight = get_shape(inputs[1])  # [c_out, c_in / groups, kh, kw]
    macs = out * _numel(weight[1:])
    return Counter(flops=2 * macs + (out if _has_bias(inputs[2]) else 0), activations=out)


def _linear(inputs: list, outputs: list) -> Counter:
    out = _numel(get_shape(outputs[0]))
    in_features = get_shape(inputs[1])[1]
    bias = len(inputs) > 2 and _has_bias(inputs[2])
    return Counter(flops=2 * out * in_features + (out if bias else 0), activations=out)


def _addmm(inputs: list, outputs: list) -> Counter:  # bias + x @ W.T, as older traces record nn.Linear
    out = _numel(get_shape(outputs[0]))
    in_features = get_shape(inputs[1])[-1]
    return Counter(flops=2 * out * in_features + out, activations=out)


def _int_list(value: Any) -> list[int]:
    """A traced int-list argument (a constant, or a list built from constants)."""
    constant = value.toIValue()
    if constant is None and value.node().kind() == "prim::ListConstruct":
        constant = [item.toIValue() for item in value.node().inputs()]
    return list(constant) if isinstance(constant, (list, tuple)) else [constant]


def _pool(inputs: list, outputs: list) -> Counter:
    out = _numel(get_shape(outputs[0]))
    kernel = _int_list(inputs[1])
    if len(kernel) == 1:
        kernel = kernel * 2
    return Counter(flops=out * kernel[0] * kernel[1], activations=out)


def _global_pool(inputs: list, outputs: list) -> Counter:
    return Counter(flops=_numel(get_shape(inputs[0])), activations=_numel(get_shape(outputs[0])))


def _mean(inputs: list, outputs: list) -> Counter:  # x.mean((2, 3)) is a global average pool
    return _global_pool(inputs, outputs)


def _elementwise(inputs: list, outputs: list) -> Counter:
    """Residual adds and max-feature-map maxima: one op per output element, no memory of their own."""
    return Counter(flops=_numel(get_shape(outputs[0])))


def _max(inputs: list, outputs: list) -> Counter:
    # torch.max(a, b) of two tensors is LightCNN's max-feature-map. The paper's memory column counts an MFM layer
    # as twice its conv output (the two halves it compares, 2 x c, on top of the 2c conv output itself); that
    # rule reproduces LightCNN-9's and LightCNN-29's memory to 0.01 MB. A reduction max(x, dim) carries an int.
    if len(inputs) == 2 and get_shape(inputs[1]):
        out = _numel(get_shape(outputs[0]))
        return Counter(flops=out, activations=2 * out)
    return Counter(flops=_numel(get_shape(inputs[0])))


PAPER_HANDLES: dict[str, Callable[[list, list], Counter] | None] = {
    "aten::_convolution": _conv,
    "aten::linear": _linear,
    "aten::addmm": _addmm,
    "aten::max_pool2d": _pool,
    "aten::avg_pool2d": _pool,
    "aten::adaptive_avg_pool2d": _global_pool,
    "aten::mean": _mean,
    "aten::add": _elementwise,
    "aten::add_": _elementwise,
    "aten::max": _max,
    "aten::maximum": _elementwise,
    # Free in the paper's convention (folded into the layer, or shape-only).
    "aten::batch_norm": None,
    "aten::hardtanh": None,
    "aten::hardtanh_": None,
    "aten::relu": None,
    "aten::relu_": None,
    "aten::split": None,
    "aten::dropout": None,
    "aten::expand": None,
    "aten::flatten": None,
    "aten::cat": None,
}


@dataclass
class Costs:
    params: int  # Keras count: trainable + BatchNorm running mean and variance
    trainable_params: int
    macs: int  # fvcore's count
    flops: int  # the paper's convention
    activations: int  # output elements of conv, pool and dense layers for one image
    memory_mb: float
    unsupported_ops: dict[str, int] = field(default_factory=dict)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(Keras-style count including BatchNorm running statistics, trainable count)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    running = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return trainable + running, trainable


def count_costs(model: nn.Module, input_size: int = 96) -> Costs:
    """Per-image costs of ``model`` on a 1 x 1 x S x S input, from two fvcore traces."""
    model = model.eval()
    x = torch.zeros(1, 1, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
        mac_analysis = FlopCountAnalysis(model, x)
        mac_analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        macs = int(mac_analysis.total())
        paper = JitModelAnalysis(model, x).set_op_handle(**PAPER_HANDLES)
        paper.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_kind = paper.by_operator()
        unsupported = Counter(paper.unsupported_ops()) + Counter(
            {f"{op} (MACs)": n for op, n in mac_analysis.unsupported_ops().items() if op not in PAPER_HANDLES}
        )
    params, trainable = count_params(model)
    activations = int(by_kind.get("activations", 0))
    return Costs(
        params=params,
        trainable_params=trainable,
        macs=macs,
        flops=int(by_kind.get("flops", 0)),
        activations=activations,
        memory_mb=BYTES_PER_VALUE * (params + activations) / 1e6,
        unsupported_ops=dict(unsupported),
    )


@dataclass
class Speed:
    latency_ms: float  # median forward time of one batch
    images_per_s: float
    batch: int
    device: str
    iterations: int


def measure_speed(
    model: nn.Module,
    batch: int = 16,
    input_size: int = 96,
    device: torch.device | None = None,
    min_seconds: float = 1.0,
    min_iters: int = 3,
    max_iters: int = 50,
) -> Speed:
    """Median forward latency at ``batch``: one warm-up pass, then passes until ``min_seconds`` have elapsed."""
    device = device or torch.device("cpu")
    model = model.to(device).eval()
    x = torch.rand(batch, 1, input_size, input_size, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    if device.type == "cuda":  # the training configuration on GPUs: channels_last and bf16
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times: list[float] = []
    with torch.inference_mode(), autocast:
        model(x)
        _sync(device)
        started = time.perf_counter()
        while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - started < min_seconds):
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    latency = statistics.median(times)
    return Speed(latency * 1e3, batch / latency, batch, str(device), len(times))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_models(
    archs: list[str] | None = None,
    *,
    input_size: int = 96,
    outputs: int | None = None,
    batch: int = 16,
    device: str = "auto",
    paper: bool = False,
    measure: bool = True,
    progress: Callable[[str], None] | None = None,
    layout: str | None = None,
) -> list[dict[str, Any]]:
    """One row per network: costs, speed and (with ``paper``) the paper's figures and relative differences.

    ``layout`` (``model.layout``) applies to the networks that have build layouts (ResNet50); the others are built
    as always. Each row's ``layout`` is the one built (None for networks with a single layout).
    """
    archs = archs or list_models()
    for arch in archs:
        get_model_info(arch)  # unknown names fail before any work
    with_layouts = [arch for arch in archs if get_model_info(arch).layouts]
    if layout is not None:
        if not with_layouts:
            check_layout(archs[0], layout)  # names the networks it applies to
        for arch in with_layouts:
            check_layout(arch, layout)
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, got {batch}", "e.g. --batch 16")
    if paper and input_size != 96:
        raise UsageError("--paper compares with the paper's 96x96 figures", "drop --input or set it to 96")
    outputs = outputs or (PAPER_OUTPUTS if paper else 12)
    torch_device = resolve_device(device)
    rows = []
    for arch in archs:
        if progress:
            progress(arch)
        built = check_layout(arch, layout if arch in with_layouts else None)
        model = create_model(arch, outputs, input_size, layout=built)
        costs = count_costs(model, input_size)
        row: dict[str, Any] = {"arch": arch, "title": get_model_info(arch).title, "layout": built,
                               "outputs": outputs, "input_size": input_size}
        row.update(asdict(costs))
        row["memory_mb"] = round(costs.memory_mb, 4)
        if measure:
            speed = measure_speed(model, batch, input_size, torch_device)
            row.update(latency_ms=round(speed.latency_ms, 3), images_per_s=round(speed.images_per_s, 1),
                       batch=batch, device=speed.device)
        else:
            row.update(latency_ms=None, images_per_s=None, batch=batch, device=str(torch_device))
        if paper:
            ref = PAPER_TABLE1[arch]
            row.update(
                paper_flops=int(ref["flops"]),
                paper_params=int(ref["params"]),
                paper_memory_mb=ref["memory_mb"],
                flops_diff=costs.flops / ref["flops"] - 1,
                params_diff=costs.params / ref["params"] - 1,
                memory_diff=costs.memory_mb / ref["memory_mb"] - 1,
            )
        rows.append(row)
    return rows
