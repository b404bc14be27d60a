"""TensorBoard event files of a run: the training curves per epoch, its settings and results for the HParams view.

``Tracker`` is what the trainer holds: ``epoch(row)`` writes one epoch's training loss, each AU's validation
accuracy and their mean, the learning rate and images/s (``end_epoch`` calls it, never the step loop);
``finish(...)`` writes the run's settings as hyperparameters with its best validation figures. ``write_test``
adds the test figures of ``aubench eval`` to the same run, so TensorBoard's HParams view compares runs on them.
The epoch is the step of every point.

Files, all in the run directory (TensorBoard's run is that directory; a study is one log root, its runs named by
their paths under it): ``events.out.tfevents.*`` (the curves, one file per training session), ``*.hparams`` (the
settings and best validation figures) and ``*.eval`` (the test figures). The last two are replaced when written
again, so a resumed or re-evaluated run holds one set. A resumed run opens its curves' file with TensorBoard's
purge step at its first epoch: points a crash left past the checkpoint are hidden by TensorBoard's readers, and
epochs are written before their checkpoint, so none is missing either.

TensorBoard is imported on first write only: with ``enabled=False`` it is never imported, and where it is not
installed one line is logged and training goes on without event files. Only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aubench_cli.fileio import named

HPARAMS_SUFFIX = ".hparams"
RUN_SECTIONS = ("model", "data", "train", "augment")
EVAL_SUFFIX = ".eval"


def _summary_writer() -> Any:
    """torch's SummaryWriter (TensorBoard's event writer), or None when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard raises ImportError without the tensorboard package
        return None
    return SummaryWriter


def _quiet_writer_thread_errors() -> None:
    """TensorBoard's writer thread keeps an error it meets (a full disk) for the next ``flush``, which raises it in
    the training thread (``Tracker.epoch``: one line from the CLI), and then re-raises it, so Python would also
    print that thread's traceback. That print, and only it, is left out: ``threading.excepthook`` is wrapped (once;
    again if something replaced it since) to skip an exception its thread has kept for the flush."""
    current = threading.excepthook
    if getattr(current, "_aubench_quiet", False):
        return

    def hook(args: Any) -> None:
        kept = getattr(args.thread, "exception", None) if args.thread is not None else None
        if type(args.thread).__name__ == "_AsyncWriterThread" and kept is args.exc_value:
            return
        current(args)

    hook._aubench_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def event_files(run_dir: str | Path, suffix: str | None = None) -> list[Path]:
    """The run's TensorBoard event files (those whose name ends with ``suffix`` when given)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and "tfevents" in p.name
                  and (suffix is None or p.name.endswith(suffix)))


class Tracker:
    """A run's TensorBoard writer, opened on the first epoch written (the run folder may not exist before)."""

    def __init__(self, run_dir: Path, *, enabled: bool, first_epoch: int | None,
                 log: Callable[[str], None] = lambda msg: None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.first_epoch = first_epoch  # a resumed run's first epoch: TensorBoard's purge step
        self.log = log
        self._writer: Any = None

    def _open(self) -> Any:
        if self._writer is None and self.enabled:
            writer_class = _summary_writer()
            if writer_class is None:
                self.log("note: the tensorboard package is not installed: no TensorBoard event files "
                         "(pip install tensorboard, or train with --no-tensorboard)")
                self.enabled = False
                return None
            _quiet_writer_thread_errors()
            # flush_secs is large: end of epoch flushes, nothing else needs to
            self._writer = writer_class(str(self.run_dir), purge_step=self.first_epoch, flush_secs=3600)
        return self._writer

    def epoch(self, row: dict[str, Any], au_names: list[str]) -> None:
        """One row of metrics.csv as TensorBoard scalars at step ``row["epoch"]``, flushed to disk."""
        writer = self._open()
        if writer is None:
            return
        step = int(row["epoch"])
        writer.add_scalar("train/loss", float(row["train_loss"]), step)
        writer.add_scalar("train/lr", float(row["lr"]), step)
        writer.add_scalar("train/images_per_s", float(row["images_per_s"]), step)
        writer.add_scalar("val/mean_accuracy", float(row["val_mean"]), step)
        for au in au_names:
            writer.add_scalar(f"val/{au}", float(row[f"val_{au}"]), step)
        try:
            writer.flush()  # the writer's thread re-raises here what it met (a full disk): the CLI says it in one line
        except OSError as exc:
            raise named(exc, self.run_dir / "events.out.tfevents") from exc

    def finish(self, hparams: dict[str, Any], best: dict[str, Any], step: int) -> None:
        """The run's settings and best validation figures for the HParams view (replacing earlier ones)."""
        if not self.enabled or (self._writer is None and _summary_writer() is None):
            return
        metrics = {"best/val_mean_accuracy": float(best.get("mean", -1.0)), "best/epoch": float(best.get("epoch", 0))}
        write_session(self.run_dir, HPARAMS_SUFFIX, metrics, step, hparams)
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def hparams_of(config: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A run's settings as HParams values: every training setting of config.yaml (its model, data, train and augment
    sections) as ``section.key`` (numbers and strings; booleans, lists and unset values as text), its cache's
    content identity and its AUs."""
    flat: dict[str, Any] = {}
    for section, values in config.items():
        if section not in RUN_SECTIONS:  # eval's and profile's defaults say nothing about this run
            continue
        for key, value in (values or {}).items():
            flat[f"{section}.{key}"] = _hparam_value(value)
    flat["data.cache_identity"] = str(record.get("cache_identity") or "")
    flat["data.aus"] = ",".join(record.get("au_names") or [])
    return flat


def _hparam_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def write_session(run_dir: Path, suffix: str, metrics: dict[str, float], step: int,
                  hparams: dict[str, Any] | None = None) -> Path | None:
    """``metrics`` as scalars at ``step`` (and, with ``hparams``, the HParams session) in a fresh event file
    ending in ``suffix``; earlier files of that suffix are removed once it is written. None without tensorboard."""
    writer_class = _summary_writer()
    if writer_class is None:
        return None
    before = event_files(run_dir, suffix)
    writer = writer_class(str(run_dir), filename_suffix=suffix, flush_secs=3600)
    try:
        if hparams is not None:
            from torch.utils.tensorboard.summary import hparams as hparams_summaries

            # The session's start and end only, no experiment summary: TensorBoard then builds the experiment
            # from every run's session, lists first the settings that differ between runs, and offers each
            # scalar tag's last value (best/, test/, the last epoch's val/ and train/) as a metric column.
            _experiment, start, end = hparams_summaries(hparams, {})
            for summary in (start, end):
                writer.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    written = [p for p in event_files(run_dir, suffix) if p not in before]
    for old in before:
        os.unlink(old)
    return written[0] if written else None


def write_test(run_dir: str | Path, result: dict[str, Any]) -> Path | None:
    """``aubench eval``'s test figures of a run that has event files (trained with TensorBoard on), at the step
    of the checkpoint evaluated; replaces those of an earlier evaluation. None when nothing was written."""
    run_dir = Path(run_dir)
    if not event_files(run_dir):
        return None
    metrics = {"test/mean_accuracy": result["mean_accuracy"], "test/balanced_accuracy": result["balanced_accuracy"]}
    for key, tag in (("mean_f1", "test/mean_f1"), ("mean_auc", "test/mean_auc")):
        if result.get(key) is not None:
            metrics[tag] = result[key]
    for au, values in result["per_au"].items():
        metrics[f"test/{au}"] = values["accuracy"]
    return write_session(run_dir, EVAL_SUFFIX, {k: float(v) for k, v in metrics.items() if v is not None},
                         int(result["epoch"]))
