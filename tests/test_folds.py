"""Subject-exclusive k-fold cross-validation: folds dealt from a hash of (fold seed, name) or read from a fold file,
a fold's test subjects never trained or validated on, the featurewise statistics from its training part only,
eval testing the run's own fold, and `aubench study --folds K` running every run on every fold."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.data.cache import open_cache
from aubench_cli.data.splits import (
    assign_folds,
    check_held_out,
    fold_assignment,
    fold_order_key,
    fold_parts,
    read_fold_file,
    subject_frames,
)
from aubench_cli.errors import UsageError
from aubench_cli.studies.study import write_study_file, load_study
from cachefixture import make_cache

runner = CliRunner()


def _names(n: int, prefix: str = "s") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


@pytest.mark.parametrize("n", [2, 5, 12, 27, 41])
def test_folds_are_disjoint_cover_every_subject_and_differ_in_size_by_at_most_one(n):
    names = _names(n, "SN")
    for k in range(2, min(n, 7) + 1):
        folds = assign_folds(names, k, seed=3)
        assert set(folds) == set(names)  # every subject, once (a dict: in one fold only)
        assert set(folds.values()) == set(range(k))
        sizes = [list(folds.values()).count(i) for i in range(k)]
        assert max(sizes) - min(sizes) <= 1, (k, sizes)
        # the same subjects and seed in any order (or repeated) give the same folds
        shuffled = names[::-1] + names[: n // 2]
        random.Random(n * k).shuffle(shuffled)
        assert assign_folds(shuffled, k, seed=3) == folds


def test_folds_follow_one_hash_order_that_k_does_not_change():
    names = _names(60)
    order = sorted(names, key=lambda s: (fold_order_key(s, 7), s))
    for k in (2, 3, 4, 6):
        folds = assign_folds(names, k, seed=7)
        assert [folds[s] for s in order] == [i % k for i in range(len(order))]  # dealt round-robin in hash order
    # K never re-aligns the order: fold f of 6 lies in fold f % 3 of 3 and f % 2 of 2
    six, three, two = (assign_folds(names, k, seed=7) for k in (6, 3, 2))
    assert all(three[s] == six[s] % 3 and two[s] == six[s] % 2 for s in names)
    other = assign_folds(names, 3, seed=8)
    assert sum(other[s] != three[s] for s in names) > 20  # the fold seed matters
    with pytest.raises(UsageError, match="at least 2"):
        assign_folds(names, 1)
    with pytest.raises(UsageError, match="needs at least 61 subjects"):
        assign_folds(names, 61)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_a_folds_test_subjects_are_never_in_its_training_or_validation(k):
    names = _names(23)
    folds = assign_folds(names, k, seed=1)
    for fold in range(k):
        parts = fold_parts(folds, fold, val_frac=0.15, seed=1)
        test, val, train = set(parts["test"]), set(parts["val"]), set(parts["train"])
        assert test == {s for s, f in folds.items() if f == fold}  # the test part is fold I, not I + 1
        assert not test & train and not test & val and not train & val
        assert test | val | train == set(names)
        rest = len(names) - len(test)
        assert len(val) == max(1, int(np.floor(0.15 * rest + 0.5)))  # rounded half up, at least one
    # validation is at least one subject, and never all of them
    assert len(fold_parts(folds, 0, val_frac=0.01)["val"]) == 1
    with pytest.raises(UsageError, match="between 0 and 1"):
        fold_parts(folds, 0, val_frac=0)
    with pytest.raises(UsageError, match=f"not a fold of {k}"):
        fold_parts(folds, k)
    with pytest.raises(UsageError, match="too few"):
        fold_parts(assign_folds(names[:4], 2), 0, val_frac=0.9)


def test_every_subject_is_tested_exactly_once_over_the_folds():
    names = _names(17)
    folds = assign_folds(names, 3, seed=0)
    tested = [s for i in range(3) for s in fold_parts(folds, i)["test"]]
    assert sorted(tested) == sorted(names)


def test_a_fold_file_wins_over_the_hash(tmp_path):
    names = _names(9)
    hashed = assign_folds(names, 3, seed=0)
    given = {s: (i * 2) % 3 for i, s in enumerate(names)}
    assert given != hashed
    path = tmp_path / "folds.csv"
    path.write_text("subject,fold\n" + "".join(f"{s}, {f}\n" for s, f in given.items()))
    assignment, source = fold_assignment(names, 3, seed=0, fold_file=path)
    assert (assignment, source) == (given, "file")
    assert fold_assignment(names, 3, seed=0) == (hashed, "hash")
    # no header, K taken from the file, comments and blank lines skipped
    path.write_text("# BP4D fold list\n\n" + "".join(f"{s},{f}\n" for s, f in given.items()))
    assert read_fold_file(path, names) == given


@pytest.mark.parametrize("text, k, message", [
    ("s000,0\ns001,1\ns002,2\nstranger,0\n", None, "names 1 subject the cache does not have: stranger"),
    ("s000,0\ns001,1\n", None, "does not place 1 subject of the cache: s002"),
    ("s000,0\ns001,1\ns002,3\n", 3, "uses fold 3, but --folds 3 numbers them 0..2"),
    ("s000,0\ns001,2\ns002,2\n", None, "no subject in fold 1"),
    ("s000,0\ns001,one\ns002,1\n", None, "fold 'one' of s001 is not a whole number"),
    ("s000,0\ns001,1\ns002,1\ns000,1\n", None, "puts s000 in two folds"),
    ("s000,-1\ns001,1\ns002,0\n", None, "negative"),
])
def test_fold_file_errors_name_the_problem(tmp_path, text, k, message):
    path = tmp_path / "f.csv"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_fold_file(path, _names(3), k)


# ----------------------------------------------------------------------------------------------------------------
# training on a fold


def _fold_cfg(cache: Path, *extra: str) -> cfgmod.Config:
    return cfgmod.resolve(sets=["train.epochs=1", "train.batches_per_epoch=2", "train.val_batches=1", "train.aug=A",
                                *extra], options={"data.cache": str(cache)})


def test_a_fold_run_uses_its_folds_subjects_and_their_training_statistics(tmp_path):
    from aubench_cli.training.trainer import _norm_stats, prepare_data

    cache_dir = make_cache(tmp_path / "c", subjects=8, videos_per_subject=1, frames=12)
    cache = open_cache(cache_dir)
    folds = assign_folds(cache.subjects, 3, seed=2)
    for fold in range(3):
        cfg = _fold_cfg(cache_dir, "data.folds=3", f"data.fold={fold}", "data.fold_seed=2", "train.norm=feature-norm")
        data = prepare_data(cfg, log=lambda m: None)
        parts = fold_parts(folds, fold, 0.15, seed=2)
        trained = {cache.subjects[i] for i in np.unique(cache.subject_index[data.train_index])}
        validated = {cache.subjects[i] for i in np.unique(cache.subject_index[data.val_index])}
        assert trained == set(parts["train"]) and validated == set(parts["val"])
        assert not (trained | validated) & {s for s, f in folds.items() if f == fold}
        record = data.record["folds"]
        assert record == {"k": 3, "fold": fold, "source": "hash", "fold_seed": 2, "subjects": parts}
        roles = data.record["subject_roles"]["subjects"]
        assert {s for s, r in roles.items() if r == "test"} == set(parts["test"])  # not the cache's test split
        # featurewise statistics over this fold's training frames only
        stats = _norm_stats(cfg, data, None)
        pixels = np.asarray(cache.images[subject_frames(cache, parts["train"])], dtype=np.float64) / 255
        assert stats.mean == pytest.approx(pixels.mean(), rel=1e-9)
        assert stats.std == pytest.approx(pixels.std(), rel=1e-6)
    with pytest.raises(UsageError, match="need --fold I"):
        prepare_data(_fold_cfg(cache_dir, "data.folds=3"), log=lambda m: None)
    with pytest.raises(UsageError, match="needs --folds K"):
        prepare_data(_fold_cfg(cache_dir, "data.fold=1"), log=lambda m: None)


def test_fold_train_and_eval_end_to_end(tmp_path):
    from aubench_cli.evaluation.evaluate import evaluate_run, pairing

    cache = make_cache(tmp_path / "c", subjects=7, videos_per_subject=1, frames=20)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--cache", str(cache), "--folds", "3", "--fold", "1", "--epochs", "1",
                                 "--batches-per-epoch", "2", "--val-batches", "1", "--aug", "A", "--out", str(run),
                                 "--json"])
    assert result.exit_code == 0, result.output
    folds = json.loads((run / "data.json").read_text())["folds"]
    expected = fold_parts(assign_folds(open_cache(cache).subjects, 3, 0), 1, 0.15, 0)
    assert folds == {"k": 3, "fold": 1, "source": "hash", "fold_seed": 0, "subjects": expected}
    config = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert (config["folds"], config["fold"], config["val_subjects_frac"]) == (3, 1, 0.15)

    evaluated = runner.invoke(app, ["eval", str(run), "--batches", "5", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    out = json.loads(evaluated.stdout)
    assert out["subjects"] == folds["subjects"]["test"] and (out["fold"], out["folds"]) == (1, 3)
    assert out["frames_in_split"] == 20 * len(folds["subjects"]["test"])
    assert out["digest"]["fold"] == "1 of 3"
    other_fold = json.loads(json.dumps(out))
    other_fold["digest"]["fold"] = "2 of 3"
    with pytest.raises(UsageError, match=r"their fold \(of K\) differ"):  # never compared as on the same frames
        pairing(out, other_fold)

    # the cache's own test split (S01) is a subject this fold trained or validated on: refused
    c = open_cache(cache)
    assert "S01" not in folds["subjects"]["test"]
    with pytest.raises(UsageError, match="S01"):
        check_held_out(run, c, "test", c.indices("test"))
    # another cache: its own split is tested (no fold), and its subjects are listed
    test_names = folds["subjects"]["test"]
    other = make_cache(tmp_path / "other", subjects=7, videos_per_subject=1, frames=20, seed=4,
                       splits={s: "test" if s in test_names else "train" for s in c.subjects})
    foreign = evaluate_run(run, cache=other, batches=5, write=False)
    assert foreign["subjects"] == test_names and "fold" not in foreign and "fold" not in foreign["digest"]

    # resuming finds the fold it started on, or refuses
    record = json.loads((run / "data.json").read_text())
    record["folds"]["subjects"]["test"] = ["S99"]
    (run / "data.json").write_text(json.dumps(record))
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert resumed.exit_code == 2 and "other fold subjects" in resumed.stderr


# ----------------------------------------------------------------------------------------------------------------
# studies on folds


def _duo(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "duo", "study": {"title": "Duo", "kind": "table"},
        "train": {"epochs": 1, "batches_per_epoch": 2, "val_batches": 1, "aug": "A"}, "eval": {"batches": 5},
        "runs": [{"name": "raw", "set": {"train.norm": "raw"}},
                 {"name": "snorm", "set": {"train.norm": "sample-norm"}}],
    }, sort_keys=False))
    return path


def test_study_dry_run_lists_every_run_fold_and_seed(tmp_path):
    cache = make_cache(tmp_path / "c", subjects=7, videos_per_subject=1, frames=10)
    preset, out = _duo(tmp_path / "duo.yaml"), tmp_path / "s"
    args = ["study", str(preset), "--cache", str(cache), "--out", str(out), "--dry-run"]
    result = runner.invoke(app, args + ["--folds", "3", "--seeds", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 12
    assert [(r["name"], r["fold"], r["seed"]) for r in rows] == [
        (name, f, k) for name in ("raw", "snorm") for f in range(3) for k in range(2)]
    for r in rows:
        assert r["key"] == f"{r['name']}.fold{r['fold']}.seed{r['seed']}" and r["state"] == "new"
        assert Path(r["run_dir"]) == out / r["name"] / f"fold{r['fold']}" / f"seed{r['seed']}"
        assert r["train_seed"] == r["seed"] and r["folds"] == 3
    folds = assign_folds(open_cache(cache).subjects, 3, 0)
    assert [rows[2 * f]["fold_subjects"] for f in range(3)] == [
        sorted(s for s, i in folds.items() if i == f) for f in range(3)]
    assert [rows[2 * f]["fold_frames"] for f in range(3)] == [10 * len(rows[2 * f]["fold_subjects"]) for f in range(3)]
    assert sum(r["total_flops"] for r in rows) == 12 * rows[0]["total_flops"]  # the estimate counts folds and seeds
    assert not out.exists()  # a dry run writes nothing

    table = runner.invoke(app, args + ["--folds", "3"])
    assert table.exit_code == 0, table.output
    assert "3 folds of subjects" in table.stdout and "2 runs x 3 folds" in table.stdout
    plain = json.loads(runner.invoke(app, args + ["--json"]).stdout)
    assert [(r["name"], r["fold"]) for r in plain] == [("raw", None), ("snorm", None)]  # no fold level unasked
    by_set = runner.invoke(app, args + ["--set", "data.folds=3"])  # would train every run on no fold: refused
    assert by_set.exit_code == 2 and "pass --folds K" in by_set.stderr

    # a fold file gives K and the folds; it must fit the cache
    names = open_cache(cache).subjects
    fold_file = tmp_path / "folds.csv"
    fold_file.write_text("".join(f"{s},{i % 2}\n" for i, s in enumerate(names)))
    rows = json.loads(runner.invoke(app, args + ["--fold-file", str(fold_file), "--json"]).stdout)
    assert [r["fold"] for r in rows] == [0, 1, 0, 1] and rows[1]["fold_subjects"] == names[1::2]
    fold_file.write_text("".join(f"{s},{i % 2}\n" for i, s in enumerate(names[:-1])))
    bad = runner.invoke(app, args + ["--fold-file", str(fold_file)])
    assert bad.exit_code == 2 and "does not place 1 subject" in bad.stderr


def test_a_study_keeps_the_folds_it_was_run_with(tmp_path):
    preset, out = _duo(tmp_path / "duo.yaml"), tmp_path / "s"
    write_study_file(load_study(preset), out, [], None, folds=3)
    assert json.loads((out / "study.json").read_text())["folds"] == 3
    args = ["study", str(preset), "--out", str(out), "--dry-run", "--json"]
    again = json.loads(runner.invoke(app, args).stdout)  # without --folds: the recorded ones
    assert [r["fold"] for r in again] == [0, 1, 2, 0, 1, 2]
    other = runner.invoke(app, args + ["--folds", "4"])
    assert other.exit_code == 2 and "was run with --folds 3" in other.stderr
    # folds on a study directory whose runs were trained without them: refused
    plain = tmp_path / "plain"
    write_study_file(load_study(preset), plain, [], None)
    (plain / "raw").mkdir()
    (plain / "raw" / "last.pt").write_bytes(b"")
    mixed = runner.invoke(app, ["study", str(preset), "--out", str(plain), "--dry-run", "--folds", "3"])
    assert mixed.exit_code == 2 and "trained without folds" in mixed.stderr


@pytest.mark.slow
def test_study_on_folds_trains_evaluates_and_resumes(tmp_path):
    cache = make_cache(tmp_path / "c", subjects=6, videos_per_subject=1, frames=16)
    preset, out = _duo(tmp_path / "duo.yaml"), tmp_path / "s"
    args = ["study", str(preset), "--cache", str(cache), "--out", str(out), "--only", "raw", "--json"]
    first = runner.invoke(app, args + ["--folds", "2"])
    assert first.exit_code == 0, first.output
    assert [(r["key"], r["state"]) for r in json.loads(first.stdout)] == [("raw.fold0", "done"), ("raw.fold1", "done")]
    tested = []
    for f in range(2):
        run = out / "raw" / f"fold{f}"
        folds = json.loads((run / "data.json").read_text())["folds"]
        result = json.loads((run / "eval.json").read_text())
        assert folds["fold"] == result["fold"] == f and result["subjects"] == folds["subjects"]["test"]
        tested += result["subjects"]
    assert sorted(tested) == open_cache(cache).subjects  # every subject tested exactly once
    # the literature report pools the study's real folds: F1 from the summed per-subject counts, by hand
    from aubench_cli.studies.literature import read

    counts = sum(np.asarray(json.loads((out / "raw" / f"fold{f}" / "eval.json").read_text())
                            ["subject_counts"]["counts"], dtype=np.float64).sum(axis=0) for f in range(2))
    tp, pos, tn, neg = counts.T
    by_hand = 2 * tp / (2 * tp + (neg - tn) + (pos - tp))
    row = next(r for r in read(out)[0].rows if r.name == "raw")
    aus = json.loads((out / "raw" / "fold0" / "eval.json").read_text())["subject_counts"]["au_names"]
    assert [row.cells["f1"][au].pooled for au in aus] == pytest.approx(list(by_hand))
    report = runner.invoke(app, ["report", str(out), "--layout", "literature"])
    assert report.exit_code == 0, report.output
    assert "pooled" in (out / "report-literature.md").read_text()
    again = runner.invoke(app, args)  # without --folds: the study's folds, nothing redone
    assert [(r["key"], r["state"]) for r in json.loads(again.stdout)] == [("raw.fold0", "skipped"),
                                                                          ("raw.fold1", "skipped")]
    # --seeds later: each fold's run is its seed 0 (moved, not retrained), seed 1 is trained on the same fold
    before = (out / "raw" / "fold1" / "best.pt").stat().st_mtime_ns
    seeded = runner.invoke(app, args + ["--seeds", "2"])
    assert seeded.exit_code == 0, seeded.output
    results = {r["key"]: r for r in json.loads(seeded.stdout)}
    assert sorted(results) == ["raw.fold0.seed0", "raw.fold0.seed1", "raw.fold1.seed0", "raw.fold1.seed1"]
    assert not results["raw.fold1.seed0"]["trained"] and results["raw.fold1.seed1"]["trained"]
    assert (out / "raw" / "fold1" / "seed0" / "best.pt").stat().st_mtime_ns == before
    assert (out / "status" / "raw.fold1.seed0.json").is_file() and not (out / "status" / "raw.fold1.json").exists()
    seed1 = json.loads((out / "raw" / "fold1" / "seed1" / "data.json").read_text())["folds"]
    assert seed1 == json.loads((out / "raw" / "fold1" / "seed0" / "data.json").read_text())["folds"]


def test_launcher_jobs_carry_their_fold(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from aubench_cli.studies import launcher

    sent: list = []

    class Executor:  # what submitit would pickle for each job: the specs
        def map_array(self, fn, specs):
            sent.extend(specs)
            return [SimpleNamespace(job_id=f"77_{i}", paths=SimpleNamespace(stdout=tmp_path / f"{i}.out"))
                    for i in range(len(specs))]

    monkeypatch.setattr(launcher, "make_executor", lambda out, options: Executor())
    monkeypatch.setattr(launcher, "_JOBS", [])  # the fake jobs must not stay for a later --wait
    cache = make_cache(tmp_path / "c", subjects=4, videos_per_subject=1, frames=16)
    preset, out = _duo(tmp_path / "duo.yaml"), tmp_path / "s"
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(out), "--folds", "2",
                                 "--launcher", "slurm", "--json"])
    assert result.exit_code == 0, result.output
    assert [j["key"] for j in json.loads(result.stdout)["submitted"]] == ["raw.fold0", "raw.fold1", "snorm.fold0",
                                                                           "snorm.fold1"]
    assert [(s.run, s.fold, s.folds, s.seed) for s in sent] == [("raw", 0, 2, None), ("raw", 1, 2, None),
                                                                ("snorm", 0, 2, None), ("snorm", 1, 2, None)]
    # the job a unit's spec describes trains and tests that fold
    (out / launcher.LEASE_DIR / "raw.fold1.json").unlink()
    done = launcher.StudyJob()(sent[1])
    assert done["state"] == "done" and done["key"] == "raw.fold1"
    assert json.loads((out / "raw" / "fold1" / "eval.json").read_text())["fold"] == 1
