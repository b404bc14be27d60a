"""List the networks of the paper's Table I, or check a weights file against one.

With no argument: every registered network with its input channels, how the paper trained it (from scratch with
Adagrad 0.005, or fine-tuned from pretrained weights with Adam 1e-4), its parameter count and where pretrained
weights come from. With ARCH and --weights/--pretrained: load them exactly as a training run would and report the tensors loaded,
missing (left at init), unexpected (in the file, unused), replaced (the classifier) and re-initialised (layers
whose shape depends on the input size), with the number of values in each, so a file can be checked before a
long training run. A load that leaves other tensors at init is refused (exit 2; with --json the report is still
printed, with "accepted": false) unless --allow-partial-weights is given.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from aubench_cli.commands._render import human, print_json, stderr, stdout
from aubench_cli.errors import UsageError

NAME = "models"


def command(
    arch: Annotated[Optional[str], typer.Argument(help="A network to check weights against (see the list).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Local state dict or aubench checkpoint to load.")] = None,
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Load the library registry's weights (online).")] = False,
    allow_partial: Annotated[bool, typer.Option("--allow-partial-weights", help="Accept weights that leave tensors outside the classifier at init.")] = False,
    layout: Annotated[Optional[str], typer.Option("--layout", help="Build layout (resnet50: v1 | v1.5); by default as train picks it.")] = None,
    outputs: Annotated[int, typer.Option("--outputs", help="Number of outputs (AUs) of the classifier.")] = 12,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    if arch is None:
        if weights or pretrained:
            raise UsageError("--weights/--pretrained need an architecture", "e.g. aubench models vgg16 --weights vgg16.pth")
        _list(outputs, json_out)
        return
    _check(arch, weights, pretrained, outputs, json_out, allow_partial, layout)


def model_rows(outputs: int = 12) -> list[dict]:
    import torch

    from aubench_cli.models import create_model, get_model_info, list_models
    from aubench_cli.profiling import count_params

    rows = []
    with torch.device("meta"):  # shapes only: counts without allocating or initialising weights
        for name in list_models():
            info = get_model_info(name)
            params, trainable = count_params(create_model(name, outputs))
            rows.append({
                "arch": name, "title": info.title, "in_chans": info.in_chans, "from_scratch": info.from_scratch,
                "optimizer": info.optimizer, "lr": info.lr, "params": params, "trainable_params": trainable,
                "pretrained_source": info.pretrained_source or ("" if info.from_scratch else "local file"),
                "layouts": list(info.layouts), "size_dependent": list(info.size_dependent),
            })
    return rows


def _list(outputs: int, json_out: bool) -> None:
    rows = model_rows(outputs)
    if json_out:
        print_json(rows)
        return
    table = Table(title=f"aubench networks ({outputs} outputs, 96x96 input)")
    for col in ("arch", "paper name", "input", "paper training", "params", "pretrained weights"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        training = "scratch, Adagrad 0.005" if r["from_scratch"] else "fine-tune, Adam 1e-4"
        table.add_row(r["arch"], r["title"], f"{r['in_chans']}ch", training, human(r["params"]), r["pretrained_source"])
    stdout.print(table)


def _check(arch: str, weights: str | None, pretrained: bool, outputs: int, json_out: bool, allow_partial: bool,
           layout: str | None) -> None:
    from aubench_cli.models import create_model, get_model_info
    from aubench_cli.models.weights import (
        PartialWeightsError,
        choose_layout,
        load_pretrained,
        load_weights_file,
    )

    get_model_info(arch)
    if weights and pretrained:
        raise UsageError("--weights and --pretrained both given", "choose one source of weights")
    if not (weights or pretrained):
        raise UsageError(f"nothing to check for {arch}", "pass --weights FILE or --pretrained")
    layout, note = choose_layout(arch, layout, pretrained=pretrained, weights_file=bool(weights))
    model = create_model(arch, outputs, layout=layout)
    try:
        report = (load_weights_file(model, arch, weights, allow_partial) if weights
                  else load_pretrained(model, arch, allow_partial))
    except PartialWeightsError as exc:  # the full report still helps: print it, then fail
        if json_out:
            print_json({**exc.report.as_dict(), "layout": layout, "accepted": False, "refusal": exc.message})
        raise
    if json_out:
        print_json({**report.as_dict(), "layout": layout, "accepted": True})
        return
    lines = report.log_lines()
    stdout.print(lines[0].removeprefix("weights: "), markup=False)
    for line in lines[1:] + ([note] if note else []) + ([f"layout: {layout}"] if layout else []):
        stderr.print(line.removeprefix("weights: "), markup=False)
