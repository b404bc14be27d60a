"""Faults a user meets, made for real where they can be (files truncated, deleted, overwritten; folders made
read-only for a process without root's override; processes killed and interrupted), and what aubench does.

Faults tried (docs/data.md, "What aubench survives"):

cache damage (a preprocessed cache, then train / eval / preprocess --verify / preprocess again):
  1. images.u8 cut short                -> train and eval: one line naming the videos and the command that
                                           repairs them, exit 2; preprocess: "N videos damaged or missing:
                                           redone", the cache then equal to a clean build
  2. labels.i8 deleted                  -> the same, every video redone
  3. one video's crops overwritten      -> (same size: reads cannot see it) --verify names it, exit 1;
                                           preprocess redoes exactly that video; --verify then passes
  4. videos.jsonl deleted               -> reads use the header's listing; --verify reports the journal;
                                           preprocess restores the journal, redoes nothing
  5. a journal line overwritten         -> the same, through preprocess (the listing restores it); without a
                                           listing (an interrupted run) reads stop with one line
  6. cache.json deleted / damaged       -> one line with the fix (--overwrite), which rebuilds it
unwritable outputs (a read-only folder, for a process without CAP_DAC_OVERRIDE):
  7. preprocess --out, train --out, train --resume, eval's run folder, synth OUT, report --out
                                        -> one line (what, why, what to do), exit 2, no traceback, nothing
                                           already written lost; resume after access is restored works
  8. disk full (ENOSPC from the writer's call) in train and preprocess; a path too long
                                        -> one line, exit 1; last.pt / finished videos intact, no temp left
failed train:
  9. bad --norm / --arch / --balance / --aug / --frames-frac, unbalanceable AUs, a damaged cache
                                        -> no run folder is created
workers:
 10. kill -9 of a preprocess or predict parent -> no process of it is left (forkserver, workers)
 11. a worker whose command is gone     -> commits nothing
 12. Ctrl-C while the forkserver starts, while a worker starts, mid-work, during option parsing
                                        -> "interrupted", exit 130, no traceback, no process left, nothing
                                           committed after it
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aubench_cli.cli import app
from aubench_cli.data import cache as cachemod
from aubench_cli.data.cache import cache_identity, consolidate, open_cache
from cachefixture import make_cache
from test_preprocess import make_dataset

runner = CliRunner()
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


# ---- fixtures: one dataset, one clean build of it, a small trained run -----------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "data"
    make_dataset(root, subjects=("s1", "s2", "s3", "s4"))
    return root


@pytest.fixture(scope="module")
def clean(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "cache"
    result = runner.invoke(app, ["preprocess", str(dataset), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    return out


def _copy(clean: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cache"
    shutil.copytree(clean, out)
    (out / cachemod.LOCK_FILE).write_text("")
    return out


def _same_content(a: Path, b: Path) -> None:
    """Two caches hold the same videos with the same bytes (rows may lie in another order)."""
    ca, cb = open_cache(a), open_cache(b)
    assert cache_identity(ca) == cache_identity(cb)
    assert sorted(ca.videos) == sorted(cb.videos)
    for v in ca.videos:
        ra, rb = ca.video_rows_of(v), cb.video_rows_of(v)
        np.testing.assert_array_equal(ca.images[ra], cb.images[rb])
        np.testing.assert_array_equal(ca.labels[ra], cb.labels[rb])
        np.testing.assert_array_equal(ca.frame[ra], cb.frame[rb])


def _preprocess(dataset: Path, out: Path, *args: str):
    return runner.invoke(app, ["preprocess", str(dataset), "--out", str(out), "--workers", "1", *args])


def _one_line_error(result, code: int, *words: str) -> str:
    text = result.stderr
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def _train(cache: Path, out: Path, *args: str):
    return runner.invoke(app, ["train", "--cache", str(cache), "--out", str(out), "--epochs", "1",
                               "--batches-per-epoch", "2", "--val-batches", "1", *args])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A trainable cache (no face detection), with the header listing a finished run writes."""
    from aubench_cli.data.align import CROP_PIPELINE_VERSION

    path = make_cache(tmp_path_factory.mktemp("small") / "c", subjects=4, videos_per_subject=1, frames=30)
    header = json.loads((path / "cache.json").read_text())
    header["settings"]["crop_pipeline"] = CROP_PIPELINE_VERSION  # crops as this aubench makes them: predict takes it
    consolidate(path, header)
    return path


@pytest.fixture(scope="module")
def trained(small, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "r"
    result = _train(small, run)
    assert result.exit_code == 0, result.output
    return run


# ---- 1-6: cache damage ------------------------------------------------------------------------------------------


def test_truncated_images_stop_train_and_eval_and_preprocess_repairs(dataset, clean, small, trained, tmp_path):
    # on the trainable cache: train and eval stop with the video named
    damaged = tmp_path / "small"
    shutil.copytree(small, damaged)
    size = (damaged / "images.u8").stat().st_size
    os.truncate(damaged / "images.u8", size - 96 * 96 * 5)  # the last video loses 5 frames
    last = open_cache(small).videos[-1]
    line = _one_line_error(_train(damaged, tmp_path / "run"), 2, last, "images.u8", "aubench preprocess")
    assert not (tmp_path / "run").exists()
    assert "--overwrite" not in line  # the fix redoes the damaged videos, not the whole cache
    result = runner.invoke(app, ["eval", str(trained), "--cache", str(damaged), "--batches", "2"])
    _one_line_error(result, 2, last, "images.u8")
    # on a preprocessed cache: the same input again redoes exactly what is missing
    out = _copy(clean, tmp_path)
    videos = open_cache(out).videos
    os.truncate(out / "images.u8", (out / "images.u8").stat().st_size - 96 * 96 * 3)
    _one_line_error(_train(out, tmp_path / "run2"), 2, videos[-1], f"aubench preprocess {dataset}")
    result = _preprocess(dataset, out)
    assert result.exit_code == 0, result.output
    assert f"1 video damaged or missing: redone ({videos[-1]})" in result.stderr
    assert "1 now, 3 already done" in result.stderr
    _same_content(out, clean)


def test_deleted_labels_file_every_video_redone(dataset, clean, tmp_path):
    out = _copy(clean, tmp_path)
    (out / "labels.i8").unlink()
    _one_line_error(_train(out, tmp_path / "run"), 2, "4 videos", "labels.i8 is missing")
    result = _preprocess(dataset, out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["videos"]["repaired"] == 4 and summary["videos"]["processed_now"] == 4
    assert "4 videos damaged or missing: redone" in result.stderr
    _same_content(out, clean)


def test_overwritten_crops_found_by_verify_and_exactly_that_video_redone(dataset, clean, tmp_path):
    out = _copy(clean, tmp_path)
    cache = open_cache(out)
    victim = cache.videos[1]
    start = int(cache.video_rows[1]) * 96 * 96 + 500
    with open(out / "images.u8", "r+b") as fh:  # same size: only the checksum can tell
        fh.seek(start)
        fh.write(bytes(300))
    del cache
    result = runner.invoke(app, ["preprocess", "--verify", "--out", str(out), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["damaged"] == [{"video": victim, "reason": "its bytes do not match its checksum"}]
    assert "Traceback" not in result.output and "re-run" in result.stderr
    assert not (out / cachemod.STAGING_DIR).exists() or True  # --verify writes nothing (checked below)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    runner.invoke(app, ["preprocess", "--verify", "--out", str(out)])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    result = _preprocess(dataset, out)
    assert result.exit_code == 0, result.output
    assert f"1 video damaged or missing: redone ({victim})" in result.stderr and "1 now, 3 already done" in result.stderr
    _same_content(out, clean)
    ok = runner.invoke(app, ["preprocess", "--verify", "--out", str(out)])
    assert ok.exit_code == 0 and "intact" in ok.stderr, ok.output


def test_deleted_journal_read_from_the_listing_and_restored(dataset, clean, tmp_path):
    out = _copy(clean, tmp_path)
    (out / cachemod.JOURNAL_FILE).unlink()
    assert sorted(open_cache(out).videos) == sorted(open_cache(clean).videos)  # readers use the header's listing
    result = runner.invoke(app, ["preprocess", "--verify", "--out", str(out), "--json"])
    assert result.exit_code == 1 and "journal" in json.loads(result.stdout)["journal"]
    result = _preprocess(dataset, out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["videos"]["processed_now"] == 0 and summary["videos"]["repaired"] == 0
    assert len(summary["reruns"]["journal_restored"]) == 4 and "restored from the header" in result.stderr
    assert sorted(cachemod.live_entries(out)) == sorted(open_cache(clean).videos)
    _same_content(out, clean)
    assert runner.invoke(app, ["preprocess", "--verify", "--out", str(out)]).exit_code == 0


def test_overwritten_journal_line(dataset, clean, tmp_path):
    out = _copy(clean, tmp_path)
    journal = out / cachemod.JOURNAL_FILE
    lines = journal.read_bytes().split(b"\n")
    lines[1] = b"#" * len(lines[1])  # same size: the listing is still used by readers
    journal.write_bytes(b"\n".join(lines))
    assert len(open_cache(out).videos) == 4
    result = _preprocess(dataset, out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["videos"]["processed_now"] == 0 and len(summary["reruns"]["journal_restored"]) == 1
    _same_content(out, clean)
    # an interrupted run's cache has no listing: a damaged line stops reads
    raw = make_cache(tmp_path / "raw", subjects=3, videos_per_subject=1, frames=5)
    lines = (raw / cachemod.JOURNAL_FILE).read_bytes().split(b"\n")
    lines[0] = b"x" * len(lines[0])
    (raw / cachemod.JOURNAL_FILE).write_bytes(b"\n".join(lines))
    _one_line_error(_train(raw, tmp_path / "run"), 2, "1 line of its journal")


def test_lost_or_damaged_header(dataset, clean, tmp_path):
    out = _copy(clean, tmp_path)
    (out / "cache.json").unlink()
    _one_line_error(_train(out, tmp_path / "run"), 2, "lost its header", "--overwrite")
    _one_line_error(_preprocess(dataset, out), 2, "lost its header", "--overwrite")
    assert _preprocess(dataset, out, "--overwrite").exit_code == 0
    _same_content(out, clean)
    (out / "cache.json").write_text((out / "cache.json").read_text()[:200])
    _one_line_error(_train(out, tmp_path / "run"), 2, "damaged", "--overwrite")
    assert not (tmp_path / "run").exists()
    assert _preprocess(dataset, out, "--overwrite").exit_code == 0
    _same_content(out, clean)


# ---- 7: read-only outputs, for a process without root's override ------------------------------------------------

RUN_CASES = r"""
import json, sys
from typer.testing import CliRunner
from aubench_cli.cli import app
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args)
    out.append({"args": args, "code": r.exit_code, "stderr": r.stderr, "stdout": r.stdout})
print(json.dumps(out))
"""


def _unprivileged_prefix(tmp_path: Path) -> list[str]:
    """How to run a command that a read-only folder stops: as is for a normal user; for root, without
    CAP_DAC_OVERRIDE (setpriv), checked to work; else the test is skipped, saying why."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed: a read-only folder cannot stop root")
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    done = subprocess.run([*prefix, "sh", "-c", f"touch {probe}/x"], capture_output=True)
    probe.chmod(0o755)
    if done.returncode == 0 or (probe / "x").exists():
        pytest.skip(f"setpriv could not drop root's override here: {done.stderr.decode()[:200]}")
    return prefix


def _run_unprivileged(prefix: list[str], cases: list[list[str]]) -> list[dict]:
    done = subprocess.run([*prefix, sys.executable, "-c", RUN_CASES, json.dumps(cases)], capture_output=True,
                          text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _digests(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_read_only_outputs_give_one_line_and_lose_nothing(dataset, clean, small, trained, tmp_path):
    prefix = _unprivileged_prefix(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    cache_ro = tmp_path / "cache_ro"
    shutil.copytree(clean, cache_ro)
    run_ro = tmp_path / "run_ro"
    shutil.copytree(trained, run_ro)
    study = tmp_path / "study"
    study.mkdir()
    before_cache, before_run = _digests(cache_ro), _digests(run_ro)
    for folder in (locked, cache_ro, run_ro, study):
        folder.chmod(0o555)
    tiny = ["--epochs", "2", "--batches-per-epoch", "2", "--val-batches", "1"]
    cases = {
        "preprocess new": ["preprocess", str(dataset), "--out", str(locked / "cache"), "--workers", "1"],
        "preprocess existing": ["preprocess", str(dataset), "--out", str(cache_ro), "--workers", "1"],
        "train new": ["train", "--cache", str(small), "--out", str(locked / "run"), *tiny],
        "train resume": ["train", "--resume", str(run_ro), "--epochs", "2", "--batches-per-epoch", "2"],
        "eval": ["eval", str(run_ro), "--batches", "2"],
        "synth": ["synth", str(locked / "synth"), "--subjects", "2"],
        "predict": ["predict", str(run_ro), str(dataset / "videos" / "s1_v1.avi"), "--out", str(study),
                    "--workers", "1"],
    }
    try:
        results = dict(zip(cases, _run_unprivileged(prefix, list(cases.values()))))
    finally:
        for folder in (locked, cache_ro, run_ro, study):
            folder.chmod(0o755)
    for name, r in results.items():
        assert r["code"] == 2, (name, r)
        assert "Traceback" not in r["stderr"] + r["stdout"], (name, r["stderr"])
        errors = [line for line in r["stderr"].splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "permission denied" in errors[0], (name, r["stderr"])
        assert "make it writable, or choose another --out" in errors[0], errors[0]
    where = {"preprocess new": f"cannot create {locked / 'cache'}:", "preprocess existing": f"in {cache_ro}:",
             "train new": f"in {locked}:", "train resume": f"in {run_ro}:", "eval": f"in {run_ro}:",
             "synth": f"cannot create {locked / 'synth'}:", "predict": f"in {study}:"}
    for name, text in where.items():
        assert text in results[name]["stderr"], (name, results[name]["stderr"])
    assert list(locked.iterdir()) == []  # no run folder, no cache folder
    assert _digests(cache_ro) == before_cache and _digests(run_ro) == before_run  # nothing lost or half-written
    # access restored: the resume goes on from where it was
    result = runner.invoke(app, ["train", "--resume", str(run_ro), "--epochs", "2", "--batches-per-epoch", "2",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["last"]["epoch"] == 2


# ---- 8: a full disk ---------------------------------------------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_in_train_keeps_the_last_checkpoint(small, tmp_path, monkeypatch):
    from aubench_cli.training import trainer as trainmod

    real_end = trainmod.end_epoch

    def end_epoch(run, epoch, *args):
        if epoch == 2:  # epoch 1's checkpoints are written (the background write done); the disk fills up now
            run.writer.wait()
            monkeypatch.setattr(os, "fsync", _enospc)
        return real_end(run, epoch, *args)

    monkeypatch.setattr(trainmod, "end_epoch", end_epoch)
    run = tmp_path / "run"
    result = _train(small, run, "--epochs", "2")
    monkeypatch.undo()
    line = _one_line_error(result, 1, "no space left", f"cannot write {run}/", "free space")
    assert line.split(": no space")[0].endswith((".pt", ".csv")), line
    assert trainmod.load_checkpoint(run / "last.pt")["epoch"] == 1  # epoch 1 is intact
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # no half-written file left


def test_disk_full_in_preprocess_keeps_the_finished_videos(dataset, clean, tmp_path, monkeypatch):
    from aubench_cli.data import preprocess as prepmod

    real = prepmod.process_video
    calls = {"n": 0}

    def process_video(task, progress=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the first video is committed; the disk is full for the second
            monkeypatch.setattr(os, "pwrite", _enospc)
        return real(task, progress)

    monkeypatch.setattr(prepmod, "process_video", process_video)
    out = tmp_path / "cache"
    result = _preprocess(dataset, out)
    monkeypatch.undo()
    _one_line_error(result, 1, "no space left", str(out / "images.u8"), "free space")
    assert len(open_cache(out).videos) == 1  # the finished video is there, whole
    result = _preprocess(dataset, out)
    assert result.exit_code == 0 and "1 already done" in result.stderr, result.output
    _same_content(out, clean)


# ---- 9: a failed train creates nothing --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [["--norm", "whiten"], ["--arch", "resnet"], ["--balance", "smote"],
                                 ["--aug", "Z"], ["--frames-frac", "2"], ["--set", "train.pos_per_au=0"]])
def test_failed_train_creates_no_run_folder(small, tmp_path, bad):
    result = _train(small, tmp_path / "run", *bad)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_unbalanceable_or_damaged_cache_creates_no_run_folder(tmp_path):
    c = make_cache(tmp_path / "c", subjects=4, videos_per_subject=1, frames=20, rates=[0.3, 0.0, 0.3, 0.3, 0.3])
    _one_line_error(_train(c, tmp_path / "run"), 2, "AU02")
    assert not (tmp_path / "run").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("x")
    _one_line_error(_train(c, tmp_path / "old", "--overwrite"), 2, "AU02")
    assert (tmp_path / "old" / "keep.txt").is_file()  # --overwrite removes nothing before the checks pass


# ---- 10-12: workers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory) -> Path:
    """Six videos long enough (90 frames each) to be caught mid-work."""
    from test_preprocess import face_frames, label_rows, write_labels, write_video

    root = tmp_path_factory.mktemp("long") / "data"
    manifest = ["video,subject"]
    for i in range(6):
        write_video(root / "videos" / f"p{i}.avi", face_frames(90, i))
        write_labels(root / "labels" / f"p{i}.csv", list(range(90)), label_rows(90, i))
        manifest.append(f"videos/p{i}.avi,p{i}")
    (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    return root


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), fields[0])
    return table


def _descendants(pid: int) -> set[int]:
    table = _process_table()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _process_table()
    return {p for p in pids if p in table and table[p][1] not in ("Z", "X")}  # a zombie has exited


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _journal_lines(out: Path) -> int:
    try:
        return (out / cachemod.JOURNAL_FILE).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _start_preprocess(data: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aubench_cli", "preprocess", str(data), "--out", str(out),
                             "--workers", "2"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _workers_of(parent: int) -> set[int]:
    """The pool's workers: the command's grandchildren forked by its forkserver (not the helper programs an import
    in the forkserver may run, such as ctypes' search for a library with gcc)."""
    table = _process_table()
    return _forkserver_processes(table, {p for p, (ppid, _) in table.items() if ppid == parent})


def _forkserver_processes(table: dict[int, tuple[int, str]], parents: set[int]) -> set[int]:
    """The live processes whose parent is in ``parents`` and whose command line is multiprocessing's forkserver
    (the forkserver itself and the workers it forks)."""
    out = set()
    for p, (ppid, state) in table.items():
        if ppid in parents and state not in ("Z", "X"):
            try:
                if b"multiprocessing.forkserver" in Path(f"/proc/{p}/cmdline").read_bytes():
                    out.add(p)
            except OSError:
                pass
    return out


def _kill_all(child: subprocess.Popen, family: set[int]) -> None:
    """A failed test leaves no process behind."""
    for pid in _alive(family | (_descendants(child.pid) if child.poll() is None else set())):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if child.poll() is None:
        child.kill()
        child.wait()


def test_kill_9_of_preprocess_leaves_no_process(long_dataset, tmp_path):
    out = tmp_path / "cache"
    child = _start_preprocess(long_dataset, out)
    family: set[int] = set()
    try:
        _wait_for(lambda: _journal_lines(out) >= 1 or child.poll() is not None, 300, "a first video committed")
        assert child.poll() is None, child.stderr.read()
        family = _descendants(child.pid)
        assert len(_workers_of(child.pid)) >= 1 and len(family) >= 3  # forkserver + workers (+ resource tracker)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
        _wait_for(lambda: not _alive(family), 10, "the forkserver and the workers to exit after their parent")
    finally:
        _kill_all(child, family)
    lines = _journal_lines(out)
    assert lines < 6 and open_cache(out).videos  # killed mid-run; what is there reads
    assert not _alive(family) and _journal_lines(out) == lines


def test_kill_9_of_predict_leaves_no_process(long_dataset, trained, tmp_path):
    # predict's workers start from the same forkserver and initializer as preprocess's: they die with the command
    out = tmp_path / "pred"
    child = subprocess.Popen([sys.executable, "-m", "aubench_cli", "predict", str(trained),
                              str(long_dataset / "videos"), "--out", str(out), "--workers", "2"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    family: set[int] = set()
    try:
        _wait_for(lambda: len(_workers_of(child.pid)) >= 2 or child.poll() is not None, 300, "predict's workers")
        assert child.poll() is None, child.stderr.read()
        family = _descendants(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
        _wait_for(lambda: not _alive(family), 10, "predict's forkserver and workers to exit after their parent")
    finally:
        _kill_all(child, family)
    assert not _alive(family)


def _signal_mask(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith(field + ":")).split()[1], 16)


def _forkserver_of(parent: int) -> set[int]:
    return _forkserver_processes(_process_table(), {parent})


@pytest.mark.parametrize("moment", ["forkserver start-up", "worker start-up", "mid-work"])
def test_ctrl_c_prints_one_line_and_leaves_no_process(long_dataset, tmp_path, moment):
    out = tmp_path / "cache"
    child = _start_preprocess(long_dataset, out)
    family: set[int] = set()
    try:
        if moment == "forkserver start-up":  # a new interpreter, importing its modules
            _wait_for(lambda: _forkserver_of(child.pid) or child.poll() is not None, 300, "the forkserver")
            for server in _forkserver_of(child.pid):  # it starts with SIGINT blocked (then ignores it)
                assert _signal_mask(server, "SigBlk") & (1 << (signal.SIGINT - 1)), "the forkserver takes SIGINT"
        elif moment == "worker start-up":  # the first worker forked, not yet set up
            _wait_for(lambda: _workers_of(child.pid) or child.poll() is not None, 300, "a worker")
            for worker in _workers_of(child.pid):  # Ctrl-C is the command's: ignored from the fork on
                ignored = _signal_mask(worker, "SigIgn")
                assert ignored & (1 << (signal.SIGINT - 1)), f"worker {worker} does not ignore SIGINT"
                # nothing multiprocessing prints while a worker starts (a SemLock gone during an interrupt)
                # reaches the terminal: the forkserver's stderr, which its children inherit, is /dev/null
                assert os.readlink(f"/proc/{worker}/fd/2") == os.devnull
        else:
            _wait_for(lambda: _journal_lines(out) >= 1 or child.poll() is not None, 300, "a first video committed")
        assert child.poll() is None
        family = _descendants(child.pid)
        committed = _journal_lines(out)
        os.killpg(child.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        err = child.communicate(timeout=60)[1]
        assert child.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err and "Error" not in err, err
        _wait_for(lambda: not _alive(family), 10, "the forkserver and the workers to exit after an interrupt")
    finally:
        _kill_all(child, family)
    # no video is finished after the interrupt (one commit may have been under way at that instant)
    assert _journal_lines(out) <= committed + 1
    open_cache(out)  # whatever was committed reads


def test_a_worker_whose_command_is_gone_commits_nothing(tmp_path):
    path = make_cache(tmp_path / "c", subjects=2, videos_per_subject=1, frames=3)
    before = (path / cachemod.JOURNAL_FILE).read_bytes()

    def write(owner):
        w = cachemod.VideoWriter(path, "late", 5, owner=owner)
        w.add(np.zeros((96, 96), np.uint8), np.zeros(5), 0, np.zeros((4, 2)), np.eye(2, 3), True)
        return w

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    (path / cachemod.LOCK_FILE).write_text(str(dead))  # its lock file still names it; nobody holds the lock
    with pytest.raises(cachemod.OwnerGone):
        write(dead).commit({"subject": "S9"})
    with pytest.raises(cachemod.OwnerGone):  # the pid is alive (ours) but does not hold the lock
        write(os.getpid()).commit({"subject": "S9"})
    assert (path / cachemod.JOURNAL_FILE).read_bytes() == before
    with cachemod.CacheLock(path):  # held by its owner: the commit goes through
        write(os.getpid()).commit({"subject": "S9"})
    assert "late" in cachemod.live_entries(path)


def test_ctrl_c_while_typer_parses_options_prints_the_line(monkeypatch, capsys):
    """Typer turns a KeyboardInterrupt during option parsing into a silent exit 130; the CLI says it."""
    from aubench_cli import cli

    def typer_interrupted():
        raise SystemExit(130)

    monkeypatch.setattr(cli, "app", typer_interrupted)
    monkeypatch.setitem(cli._reported, "interrupt", False)
    with pytest.raises(SystemExit) as exc:
        cli.run()
    assert exc.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_a_path_too_long_is_one_line(dataset, small, tmp_path):
    long = tmp_path / ("x" * 300)  # one name longer than any file system takes (255 bytes)
    _one_line_error(_preprocess(dataset, long), 2, "the path is too long", "choose a shorter")
    _one_line_error(_train(small, long / "run"), 2, "the path is too long")


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # pytest's form of the traceback
def test_disk_full_in_the_tensorboard_writer_is_one_line_without_a_thread_traceback(small, tmp_path, monkeypatch,
                                                                                   capfd):
    """TensorBoard writes its event file from a thread of its own: a full disk there reaches the CLI as the usual
    one line (the flush re-raises it), and the thread's traceback is not printed beside it."""
    from tensorboard.summary.writer import record_writer

    from aubench_cli.training import trainer as trainmod

    real_end, real_write = trainmod.end_epoch, record_writer.RecordWriter.write
    full = {"on": False}

    def write(self, data):
        if full["on"]:
            _enospc()
        return real_write(self, data)

    def end_epoch(run, epoch, *args):
        if epoch == 2:
            run.writer.wait()  # epoch 1 is on disk; the disk fills up now, for TensorBoard's thread
            full["on"] = True
        return real_end(run, epoch, *args)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    monkeypatch.setattr(trainmod, "end_epoch", end_epoch)
    run = tmp_path / "run"
    result = _train(small, run, "--epochs", "2")
    monkeypatch.undo()
    line = _one_line_error(result, 1, "no space left", "events.out.tfevents", "free space")
    assert line
    printed = capfd.readouterr()  # what reached the process's own streams (a thread's excepthook writes there)
    assert "Traceback" not in printed.err + result.stderr and "Exception in thread" not in printed.err + result.stderr
    assert trainmod.load_checkpoint(run / "last.pt")["epoch"] == 1
