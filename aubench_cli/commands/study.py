"""Run one of the paper's experiments (a study preset): train and evaluate each of its runs, resumably.

Each run goes to DIR/<run name>/ (DIR defaults to studies/<preset>): finished runs are skipped, interrupted ones
resumed, a failed run is reported while the others go on (exit code 1 at the end). --dry-run lists the runs and
their estimated compute; --seeds N repeats every run with training seeds 0..N-1 (DIR/<run>/seed<k>/); --folds K
(or --fold-file FILE) runs every run on every fold of a subject-exclusive K-fold cross-validation
(DIR/<run>/fold<i>/[seed<k>/]);
--fold-seeds R (with --folds) repeats the K-fold protocol over R assignments of subjects to folds
(DIR/<run>/foldseed<r>/fold<i>/ for r > 0: the fold-assignment noise floor);
--launcher local|slurm submits each pending run as a submitit job (one array), --status shows each run's state and
job; --shard I/N does every N-th run from I (other schedulers); --set applies to every run (e.g. --set
train.epochs=2 for a quick pass). `aubench report DIR` then makes the tables.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from aubench_cli.commands.choices import Launcher
from aubench_cli.commands._render import pace_note, print_json, progress, say, stderr, stdout
from aubench_cli.errors import plural

NAME = "study"


def command(
    preset: Annotated[str, typer.Argument(help="Study preset: a name in presets/ (table1-architectures, table2-normalization, table2-augmentation, table2-balancing, fig2-frames, fig2-subjects) or a YAML file.")],
    cache: Annotated[Optional[str], typer.Option("--cache", help="Cache written by aubench preprocess (default: the preset's, else ./aubench-cache).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Study directory (default: studies/<preset name>).")] = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Do only this run (repeatable, or comma-separated).")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: do every N-th run of the preset starting at I (0-based), e.g. $SLURM_ARRAY_TASK_ID/4.")] = None,
    weights: Annotated[Optional[list[str]], typer.Option("--weights", help="RUN=FILE: local pretrained weights for one run (repeatable), e.g. lightcnn9=LightCNN_9Layers.pth.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs, their state and estimated compute; train nothing.")] = False,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting for every run, e.g. train.epochs=2.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the runs (with --dry-run) or their results as JSON on stdout.")] = False,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Repeat every run with training seeds 0..N-1 (the test batches stay the same).")] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", min=2, help="Subject-exclusive K-fold cross-validation: every run on every fold (DIR/<run>/fold<i>/).")] = None,
    fold_seeds: Annotated[Optional[int], typer.Option("--fold-seeds", min=1, help="With --folds: repeat the K-fold protocol over R assignments of subjects to folds (fold seeds 0..R-1; DIR/<run>/foldseed<r>/fold<i>/ for r > 0): the fold-assignment noise floor.")] = None,
    fold_file: Annotated[Optional[str], typer.Option("--fold-file", help="CSV of subject,fold rows (a published fold list); wins over the hash; K from the file.")] = None,
    launcher: Annotated[Optional[Launcher], typer.Option("--launcher", help="One submitit job per pending run, on this machine or SLURM; without it the study runs here, in this process.", case_sensitive=False)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="With --launcher: wait for the jobs to end.")] = False,
    show_status: Annotated[bool, typer.Option("--status", help="Show each run's state and the job holding it; run nothing.")] = False,
    partition: Annotated[Optional[str], typer.Option("--partition", help="SLURM partition.")] = None,
    time_min: Annotated[int, typer.Option("--time", min=1, help="Job time limit in minutes (longer runs are requeued and resume).")] = 60,
    gpus_per_run: Annotated[int, typer.Option("--gpus-per-run", min=0, help="GPUs per run; above 1, DDP across them.")] = 0,
    cpus_per_run: Annotated[Optional[int], typer.Option("--cpus-per-run", min=1, help="CPU cores per run.")] = None,
    array_parallelism: Annotated[int, typer.Option("--array-parallelism", min=1, help="Jobs of the array running at once.")] = 256,
    runs_per_device: Annotated[Optional[int], typer.Option("--runs-per-device", min=1, help="With --launcher: N runs at once on each GPU, each pinned to its GPU (GPU memory checked first, locally).")] = None,
    slurm: Annotated[Optional[list[str]], typer.Option("--slurm", help="Any other sbatch parameter, KEY=VALUE (repeatable), e.g. account=myproj.")] = None,
) -> None:
    from aubench_cli.errors import AubenchError, debug_enabled
    from aubench_cli.studies.study import (
        estimate,
        expand_units,
        fold_summary,
        load_study,
        parse_shard,
        parse_weights,
        check_fold_seeds,
        recorded_fold_seeds,
        recorded_folds,
        recorded_seeds,
        resolve_folds,
        run_study,
        select_runs,
        unit_configs,
    )

    study = load_study(preset)
    out_dir = Path(out) if out else Path("studies") / study.name
    runs = select_runs(study, only, parse_shard(shard))
    given_weights = parse_weights(weights, study)
    seeds = recorded_seeds(out_dir, seeds)
    folds, fold_file = recorded_folds(out_dir, *resolve_folds(folds, fold_file))
    fold_seeds = recorded_fold_seeds(out_dir, fold_seeds)
    check_fold_seeds(fold_seeds, folds, fold_file)
    units = expand_units(runs, seeds, folds, fold_seeds)
    if dry_run or show_status:
        cfgs = unit_configs(study, units, sets, cache, given_weights, folds, fold_file)
        if show_status:
            from aubench_cli.studies.launcher import status

            rows = status(study, out_dir, units, cfgs)
            print_json(rows) if json_out else _render_status(study.name, rows, out_dir)
            return
        rows = estimate(study, units, cfgs, out_dir)
        per_fold = fold_summary(next(iter(cfgs.values()))) if folds and cfgs else None
        if per_fold:
            for r in rows:
                r["fold_subjects"] = per_fold[r["fold"]]["subjects"]
                r["fold_frames"] = per_fold[r["fold"]]["frames"]
        for r in rows:  # pretrained weights from the library's registry: a download on first use
            cfg = cfgs.get(r["key"])
            r["downloads_weights"] = bool(cfg is not None and cfg.model.pretrained and not cfg.model.weights)
        if json_out:
            print_json(rows)
            return
        _render_plan(study.name, rows, out_dir, per_fold, folds, seeds, fold_seeds)
        return
    if not runs:
        stderr.print(f"no run of {study.name} selected (--shard {shard} --only {only}): nothing to do")
        return
    if launcher is not None:
        _launch(study, preset, out_dir, units, sets or [], cache, given_weights, seeds, json_out, wait,
                launcher.value, partition, time_min, gpus_per_run, cpus_per_run, array_parallelism, slurm,
                folds, fold_file, fold_seeds, runs_per_device or 0)
        return
    if runs_per_device:
        from aubench_cli.errors import UsageError

        raise UsageError("--runs-per-device packs runs as jobs, and no --launcher was given",
                         "add --launcher local (this machine's GPUs) or --launcher slurm")

    bar = progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    tasks: dict[str, int] = {}
    began: dict[str, tuple[float, int, str]] = {}  # run -> (start time, its epochs, its device) until its first epoch

    def on_progress(name: str, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            tasks[name] = bar.add_task(f"{name}: train", total=event["total"])
            began[name] = (time.perf_counter(), event["epochs"], event["device"])
        elif kind == "step" and name in tasks:
            bar.update(tasks[name], advance=1, description=f"{name}: epoch {event['epoch']}")
        elif kind == "epoch":
            line = f"{name}: epoch {event['epoch']} val mean acc {event['val_mean']:.4f} (best epoch {event['best_epoch']})"
            say(bar, line, markup=False)
            if name in began:
                start, epochs, device = began.pop(name)
                note = pace_note(time.perf_counter() - start, epochs - event["epoch"], device,
                                 shorten="--set train.epochs=10 --set train.batches_per_epoch=50")
                if note:
                    say(bar, f"{name}: {note}", markup=False)
        elif kind == "eval" and name in tasks:
            bar.update(tasks[name], description=f"{name}: eval")

    stderr.print(f"study {study.name}: {len(runs)} of {plural(len(study.runs), 'run')}"
                 + (f" x {plural(fold_seeds, 'fold assignment')}" if fold_seeds else "")
                 + (f" x {plural(folds, 'fold')}" if folds else "")
                 + (f" x {plural(seeds, 'seed')}" if seeds else "") + f" into {out_dir}")
    with bar:
        try:
            results = run_study(study, out_dir, units=units, sets=sets, cache=cache, weights=given_weights, seeds=seeds,
                                folds=folds, fold_file=fold_file, fold_seeds=fold_seeds,
                                log=lambda m: stderr.print(m, markup=False),
                                progress=on_progress, debug=debug_enabled())
        except KeyboardInterrupt:
            stderr.print(f"[yellow]interrupted: the current run saved its checkpoint; the same command resumes "
                         f"the study[/]")
            raise typer.Exit(130) from None
    failed = [r for r in results if r["state"] == "failed"]
    if json_out:
        print_json(results)
    else:
        table = Table(title=f"study {study.name} ({out_dir})")
        for col in ("run", "arch", "state", "mean accuracy", "note"):
            table.add_column(col, justify="right" if col == "mean accuracy" else "left")
        for r in results:
            acc = "-" if r["mean_accuracy"] is None else f"{100 * r['mean_accuracy']:.1f}"
            note = r["error"] or ("trained + evaluated" if r["trained"] else "evaluated" if r["evaluated"]
                                  else "already finished")
            table.add_row(r.get("key", r["name"]), r["arch"], r["state"], acc, note)
        stdout.print(table)
        stdout.print(f"tables and figures: aubench report {out_dir}  (one HTML file: --format html)")
        stdout.print(f"training curves and settings side by side: tensorboard --logdir {out_dir}")
    if failed:
        raise AubenchError(f"{len(failed)} of {len(results)} runs failed: {', '.join(r.get('key', r['name']) for r in failed)}",
                           f"details in {out_dir}/status/; fix them and run the same command again (finished runs are kept)")


def _launch(study, preset: str, out_dir: Path, units: list, sets: list[str], cache: Optional[str], weights: dict,
            seeds: Optional[int], json_out: bool, wait: bool, launcher: str, partition: Optional[str], time_min: int,
            gpus_per_run: int, cpus_per_run: Optional[int], array_parallelism: int, slurm: Optional[list[str]],
            folds: Optional[int] = None, fold_file: Optional[str] = None, fold_seeds: Optional[int] = None,
            runs_per_device: int = 0) -> None:
    from aubench_cli.errors import AubenchError
    from aubench_cli.studies.launcher import LAUNCHERS, LaunchOptions, parse_slurm_items, submit, wait_all

    if launcher not in LAUNCHERS:
        from aubench_cli.errors import UsageError, suggest

        raise UsageError(f"unknown launcher {launcher!r}", suggest(launcher, LAUNCHERS))
    options = LaunchOptions(launcher, partition, time_min, gpus_per_run, cpus_per_run, array_parallelism,
                            parse_slurm_items(slurm), runs_per_device)
    outcome = submit(study, out_dir, units, preset=preset, sets=sets, cache=cache, weights=weights, seeds=seeds,
                     options=options, log=lambda m: stderr.print(m, markup=False), folds=folds, fold_file=fold_file,
                     fold_seeds=fold_seeds)
    results = wait_all() if wait else None
    if json_out:
        print_json({**outcome, **({"results": results} if results is not None else {})})
    else:
        for job in outcome["submitted"]:
            stdout.print(f"{job['key']}: job {job['job']}" + (f" on {job['device']}" if job.get("device") else ""))
        if outcome.get("runs_per_device"):
            stdout.print(f"{outcome['runs_per_device']} runs at once per GPU")
        for held in outcome["held"]:
            stdout.print(f"{held['key']}: already held by job {held['job']} (pending or running)")
        stdout.print(f"{len(outcome['submitted'])} submitted ({launcher}), {len(outcome['done'])} already done, "
                     f"{len(outcome['held'])} held by earlier jobs; logs in {outcome['logs']}")
        if results is None and outcome["submitted"]:
            stdout.print(f"follow them with: aubench study {preset} --out {out_dir} --status")
    failed = [r for r in results or [] if r.get("state") == "failed"]
    if failed:
        raise AubenchError(f"{len(failed)} jobs failed: " + ", ".join(str(r.get("key") or r.get("error")) for r in failed),
                           f"details in {out_dir}/status/ and the logs; the same command resubmits them")


def _render_status(name: str, rows: list[dict], out_dir: Path) -> None:
    table = Table(title=f"{name}: {len(rows)} runs in {out_dir}")
    for col in ("run", "state", "job", "note"):
        table.add_column(col)
    for r in rows:
        job = r["job"]
        table.add_row(r["key"], r["state"], "-" if job is None else f"{job['id']} ({job['launcher']}, {job['state']})",
                      r["error"] or "")
    stdout.print(table)


def _render_plan(name: str, rows: list[dict], out_dir: Path, per_fold: Optional[list[dict]] = None,
                 folds: Optional[int] = None, seeds: Optional[int] = None, fold_seeds: Optional[int] = None) -> None:
    from aubench_cli.studies.study import human_flops

    if folds:
        _render_folds(per_fold, folds)

    table = Table(title=f"{name}: {len(rows)} runs into {out_dir}",
                  caption="cost = forward FLOPs per image (paper convention, aubench profile) x training images "
                          "x 3 (forward + backward), plus one forward pass per validation and test image")
    for col in ("run", "arch", "settings", "state", "images trained", "FLOPs/img", "est. compute"):
        table.add_column(col, justify="right" if col in ("images trained", "FLOPs/img", "est. compute") else "left")
    total = 0
    for r in rows:
        settings = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(shared)"
        state = r["state"] if not r["problem"] else f"{r['state']}; needs weights"
        table.add_row(r["key"], r["arch"], settings, state, f"{r['train_images']:,}",
                      human_flops(r["forward_flops_per_image"]), human_flops(r["total_flops"]))
        total += r["total_flops"]
    stdout.print(table)
    aus = {(r["aus"], r["aus_from"]) for r in rows}
    units = (f" ({len({r['name'] for r in rows})} runs" + (f" x {fold_seeds} fold assignments" if fold_seeds else "")
             + (f" x {folds} folds" if folds else "")
             + (f" x {seeds} seeds" if seeds else "") + ")") if folds or seeds else ""
    stdout.print(f"total {human_flops(total)}{units}; batches of 8 x K frames with K = "
                 + ", ".join(f"{k} AUs ({src})" for k, src in sorted(aus)))
    for r in rows:
        if r["problem"]:
            stdout.print(f"[yellow]{r['name']}: {r['problem']}; pass --weights {r['name']}=FILE[/]")
    downloads = list(dict.fromkeys(r["name"] for r in rows if r.get("downloads_weights")))
    if downloads:
        stdout.print(f"[yellow]{plural(len(downloads), 'run')} ({', '.join(downloads)}) download pretrained weights "
                     "from the library's registry on first use (network needed once; offline, give a local file "
                     f"with --weights RUN=FILE, e.g. --weights {downloads[0]}=FILE)[/]")


def _render_folds(per_fold: Optional[list[dict]], folds: int) -> None:
    if per_fold is None:
        stdout.print(f"{folds} folds; the cache cannot be read here, so its subjects per fold are not shown")
        return
    table = Table(title=f"{len(per_fold)} folds of subjects ({per_fold[0]['source']}); each run tests on one fold, "
                        "validates on a share of the others and trains on the rest")
    for col in ("fold", "subjects", "frames", "names"):
        table.add_column(col, justify="right" if col in ("subjects", "frames") else "left")
    for f in per_fold:
        more = len(f["subjects"]) - 12
        names = ", ".join(f["subjects"][:12]) + (f" and {more} more" if more > 0 else "")
        table.add_row(str(f["fold"]), str(len(f["subjects"])), f"{f['frames']:,}", names)
    stdout.print(table)
