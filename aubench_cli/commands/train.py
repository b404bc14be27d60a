"""Train a network with the paper's protocol (balanced batches, per-AU BCE, best validation checkpoint).

Settings come from the defaults (the paper's), then --preset, then --set key=value, then the options below.
Writes config.yaml, data.json, metrics.csv, best.pt, last.pt and TensorBoard event files (--no-tensorboard: none)
into the run directory. Ctrl-C saves a checkpoint; --resume RUN continues it exactly. Several GPUs or machines:
torchrun --nproc-per-node N -m aubench_cli train ...
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from aubench_cli import config as cfgmod
from aubench_cli.commands._render import pace_note, print_json, progress, say, stderr, stdout
from aubench_cli.commands.choices import Aug, Balance, CudaGraphs, Norm, Optimizer, complete_device, value
from aubench_cli.commands.preprocess import close_unused
from aubench_cli.errors import UsageError, plural

NAME = "train"
# what a resume may pass anew: the total of epochs, where it runs, where its cache is now, whether it logs
RESUME_MAY_CHANGE = ("train.epochs", "train.device", "data.cache", "train.tensorboard", "train.cuda_graphs")


def command(
    cache: Annotated[Optional[str], typer.Option("--cache", help="Cache written by aubench preprocess.", show_default="./aubench-cache")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Network (aubench models lists them).", show_default="baseline")] = None,
    balance: Annotated[Optional[Balance], typer.Option("--balance", help="Batch balancing (Table II).", show_default="oversample")] = None,
    norm: Annotated[Optional[Norm], typer.Option("--norm", help="Input centering / normalization (Table II).", show_default="raw")] = None,
    aug: Annotated[Optional[Aug], typer.Option("--aug", case_sensitive=False, metavar="A|B|C|D", help="Augmentation group, A (none) to D (Table II).", show_default="D")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs; with --resume, the new total.", show_default="600")] = None,
    batches_per_epoch: Annotated[Optional[int], typer.Option("--batches-per-epoch", help="Training batches per epoch.", show_default="300")] = None,
    val_batches: Annotated[Optional[int], typer.Option("--val-batches", help="Balanced validation batches per epoch.", show_default="300")] = None,
    optimizer: Annotated[Optional[Optimizer], typer.Option("--optimizer", help="Optimizer.", show_default="the paper's for the network")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate.", show_default="0.005 Adagrad, 1e-4 Adam")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of init, batches, subsets.", show_default="0")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.", show_default="auto", autocompletion=complete_device)] = None,
    frames_frac: Annotated[Optional[float], typer.Option("--frames-frac", help="Fraction of training frames (Section V).", show_default="1")] = None,
    subjects_frac: Annotated[Optional[float], typer.Option("--subjects-frac", help="Fraction of training subjects (Section V).", show_default="1")] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", min=2, help="Subject-exclusive K-fold cross-validation: K folds of subjects (the cache's split is not used); with --fold.")] = None,
    fold: Annotated[Optional[int], typer.Option("--fold", min=0, help="The fold to test on, 0..K-1; training is every other fold.")] = None,
    fold_file: Annotated[Optional[str], typer.Option("--fold-file", help="CSV of subject,fold rows (a published fold list); wins over the hash.")] = None,
    fold_seed: Annotated[Optional[int], typer.Option("--fold-seed", help="Seed of the folds' hash and of the validation subjects (not the training seed).", show_default="0")] = None,
    val_subjects_frac: Annotated[Optional[float], typer.Option("--val-subjects-frac", help="Under folds: share of the training subjects held out for validation (at least one).", show_default="0.15")] = None,
    drop_unbalanceable: Annotated[Optional[bool], typer.Option("--drop-unbalanceable", help="Drop AUs with no positives or negatives in a split (with a warning).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Start from this state dict or checkpoint (classifier replaced).")] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained", help="Start from the library registry's weights (online).")] = None,
    allow_partial_weights: Annotated[Optional[bool], typer.Option("--allow-partial-weights", help="Accept weights that leave tensors outside the classifier at init.")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile", help="torch.compile the model.")] = None,
    cuda_graphs: Annotated[Optional[CudaGraphs], typer.Option("--cuda-graphs", help="Replay the training step and validation as CUDA graphs (auto: on for CUDA; falls back to eager with a line saying why).", show_default="auto")] = None,
    scale_batch: Annotated[Optional[bool], typer.Option("--scale-batch", help="Under torchrun: a full batch per process, lr x N, 1/N of the steps (not the one-process experiment).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Run directory.", show_default="runs/<arch>-<settings>-<time>")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue the run in this directory exactly.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")] = False,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Preset name (presets/) or YAML file.")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override any setting, e.g. augment.rotate=15.")] = None,
    tensorboard: Annotated[Optional[bool], typer.Option("--tensorboard/--no-tensorboard", help="TensorBoard event files in the run directory (tensorboard --logdir RUN_OR_STUDY).", show_default="on")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON on stdout.")] = False,
) -> None:
    from aubench_cli.training.trainer import train

    if resume and out and out != resume:
        raise UsageError("--resume names the run directory; --out is not needed with it", f"drop --out {out}")
    options = {
        "data.cache": cache, "model.arch": arch, "train.balance": value(balance), "train.norm": value(norm), "train.aug": value(aug),
        "train.epochs": epochs, "train.batches_per_epoch": batches_per_epoch, "train.val_batches": val_batches,
        "train.optimizer": value(optimizer), "train.lr": lr, "train.seed": seed, "train.device": device,
        "data.frames_frac": frames_frac, "data.subjects_frac": subjects_frac,
        "data.folds": folds, "data.fold": fold, "data.fold_file": fold_file, "data.fold_seed": fold_seed,
        "data.val_subjects_frac": val_subjects_frac, "data.drop_unbalanceable": drop_unbalanceable,
        "model.weights": weights, "model.pretrained": pretrained,
        "model.allow_partial_weights": allow_partial_weights, "train.compile": compile_,
        "train.scale_batch": scale_batch, "train.tensorboard": tensorboard, "train.cuda_graphs": value(cuda_graphs),
    }
    if resume:
        _check_resume_settings(resume, preset, sets, options)
    cfg = cfgmod.resolve(preset, sets, options)
    if cfg.train.aug:
        cfg.train.aug = cfg.train.aug.upper()

    bar = progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    state: dict = {}

    def on_progress(event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            state["task"] = bar.add_task("train", total=event["total"], speed="")
            state.update(run=event["run"], epochs=event["epochs"], device=event["device"], began=time.perf_counter())
            stderr.print(f"training into {event['run']} ({plural(event['epochs'], 'epoch')}, batches of {event['batch_size']})")
        elif kind == "step":
            bar.update(state["task"], advance=1, description=f"epoch {event['epoch']}")
        elif kind == "epoch":
            bar.update(state["task"], speed=f"{event['images_per_s']:.0f} img/s")
            line = (f"epoch {event['epoch']}: loss {event['train_loss']:.4f}  val mean acc {event['val_mean']:.4f}  "
                    f"(best epoch {event['best_epoch']})  {event['images_per_s']:.0f} img/s")
            say(bar, line)
            if "began" in state:  # this process's first epoch (warm-up and all: an upper bound) times the rest
                note = pace_note(time.perf_counter() - state.pop("began"), state["epochs"] - event["epoch"], state["device"])
                if note:
                    say(bar, note)

    # under torchrun every process runs this command: rank 0 alone speaks (one bar, one set of lines, one summary or
    # JSON document on stdout); the others' errors still reach their stderr
    speaks = os.environ.get("RANK", "0") in ("", "0")
    with bar if speaks else contextlib.nullcontext():
        try:
            summary = train(cfg, resume or out, resume=bool(resume), epochs=epochs if resume else None,
                            overwrite=overwrite, cache=cache if resume else None,
                            log=(lambda m: stderr.print(m, markup=False)) if speaks else (lambda m: None),
                            progress=on_progress if speaks else None)
        except KeyboardInterrupt:
            run = state.get("run", resume or out)
            if speaks:
                stderr.print(f"[yellow]interrupted: checkpoint saved; continue with aubench train --resume {run}[/]")
            raise typer.Exit(130) from None
        finally:
            if speaks and not bar.tasks:  # an error before the first epoch, a resume with nothing left to do: no empty bar
                close_unused(bar)
    if not speaks:
        return
    if json_out:
        print_json(summary)
        return
    stdout.print(f"best mean validation accuracy {summary['best_val_mean_accuracy']:.4f} at epoch "
                 f"{summary['best_epoch']}; run written to {summary['run']}")


def _check_resume_settings(run: str, preset: str | None, sets: list[str] | None, options: dict) -> None:
    """A resumed run keeps its own settings: the same ones passed again are fine, different ones are refused."""
    from aubench_cli.training.trainer import saved_config

    # --cache may point at the run's cache where it lies now: the trainer checks its content identity
    given = {k: v for k, v in options.items()
             if v is not None and k not in RESUME_MAY_CHANGE}
    if not (given or preset or sets):
        return
    saved = saved_config(run)
    wanted = cfgmod.resolve(preset, sets, given, base=saved)
    wanted.train.aug = wanted.train.aug.upper()
    a, b = cfgmod.to_dict(saved), cfgmod.to_dict(wanted)
    changed = [f"{section}.{key}: {value!r} in the run, {b[section][key]!r} given"
               for section, values in a.items() for key, value in values.items()
               if f"{section}.{key}" not in RESUME_MAY_CHANGE and b[section][key] != value]
    if changed:
        raise UsageError(f"a resumed run keeps its own settings; these differ: {'; '.join(changed)}",
                         "pass only --resume RUN (and --epochs N to extend it), or start a new run with --out")
