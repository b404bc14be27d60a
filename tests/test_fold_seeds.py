"""The fold-assignment noise floor (`aubench study --folds K --fold-seeds R`): every run on every fold of R
assignments of subjects to folds (fold seed + r), resumable and through the launchers; the literature report's
spread due to the assignment beside that due to training seeds, how often the best run changes; and a real
3-run, 2-fold-seed study on synthetic data through the CLI, reported in every format with its rankings."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from aubench_cli.cli import app
from aubench_cli.data.cache import open_cache
from aubench_cli.data.splits import fold_assignment
from aubench_cli.studies import launcher
from aubench_cli.studies import study as studymod
from aubench_cli.studies.rankings import Inputs, noise_floor
from cachefixture import make_cache

runner = CliRunner()


def _trio(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "trio", "study": {"title": "Trio", "kind": "table"},
        "train": {"epochs": 1, "batches_per_epoch": 2, "val_batches": 1, "aug": "A"}, "eval": {"batches": 5},
        "runs": [{"name": "raw", "set": {"train.norm": "raw"}},
                 {"name": "snorm", "set": {"train.norm": "sample-norm"}},
                 {"name": "fnorm", "set": {"train.norm": "feature-norm"}}],
    }, sort_keys=False))
    return path


def test_units_configs_and_directories_of_fold_seeds(tmp_path):
    study = studymod.load_study(_trio(tmp_path / "trio.yaml"))
    units = studymod.expand_units(study.runs[:1], seeds=2, folds=2, fold_seeds=2)
    assert [(u.assignment, u.fold, u.seed) for u in units] == [(r, f, k) for r in range(2) for f in range(2)
                                                              for k in range(2)]
    keys = [u.key for u in units]
    assert keys[0] == "raw.fold0.seed0" and keys[-1] == "raw.foldseed1.fold1.seed1"  # assignment 0: the usual place
    assert units[-1].dir(tmp_path) == tmp_path / "raw" / "foldseed1" / "fold1" / "seed1"
    assert units[0].dir(tmp_path) == tmp_path / "raw" / "fold0" / "seed0"
    cfgs = studymod.unit_configs(study, units, ["data.fold_seed=5"], None, None, 2, None)
    assert [cfgs[u.key].data.fold_seed for u in units] == [5, 5, 5, 5, 6, 6, 6, 6]
    assert [cfgs[u.key].train.seed for u in units[:2]] == [0, 1]


def test_fold_seeds_dry_run_and_bad_uses(tmp_path):
    cache = make_cache(tmp_path / "c", subjects=8, videos_per_subject=1, frames=10)
    preset, out = _trio(tmp_path / "trio.yaml"), tmp_path / "s"
    args = ["study", str(preset), "--cache", str(cache), "--out", str(out), "--dry-run", "--only", "raw"]
    rows = json.loads(runner.invoke(app, args + ["--folds", "2", "--fold-seeds", "3", "--json"]).stdout)
    assert [(r["assignment"], r["fold"]) for r in rows] == [(r, f) for r in range(3) for f in range(2)]
    assert not out.exists()
    table = runner.invoke(app, args + ["--folds", "2", "--fold-seeds", "3"])
    assert table.exit_code == 0 and "1 runs x 3 fold assignments x 2 folds" in table.stdout
    assert "raw.foldseed2.fold1" in table.stdout
    # the assignments differ: fold seed 0, 1, 2 deal other folds on this cache
    subjects = list(open_cache(cache).subjects)
    dealt = [fold_assignment(subjects, 2, r, None)[0] for r in range(3)]
    assert dealt[0] != dealt[1] or dealt[0] != dealt[2]
    no_folds = runner.invoke(app, args + ["--fold-seeds", "2"])
    assert no_folds.exit_code == 2 and "add --folds K" in no_folds.stderr
    fold_file = tmp_path / "f.csv"
    fold_file.write_text("".join(f"{s},{i % 2}\n" for i, s in enumerate(subjects)))
    fixed = runner.invoke(app, args + ["--fold-file", str(fold_file), "--fold-seeds", "2"])
    assert fixed.exit_code == 2 and "--fold-file fixes them" in fixed.stderr
    # a study directory keeps its fold seeds, as it keeps its folds and seeds
    studymod.write_study_file(studymod.load_study(preset), out, [], None, folds=2, fold_seeds=2)
    again = json.loads(runner.invoke(app, args + ["--json"]).stdout)
    assert [(r["assignment"], r["fold"]) for r in again] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_launcher_jobs_carry_the_assignment(tmp_path, monkeypatch):
    cache = make_cache(tmp_path / "c", subjects=8, videos_per_subject=1, frames=10)
    preset, out = _trio(tmp_path / "trio.yaml"), tmp_path / "s"
    sent = []

    class FakeExecutor:
        def map_array(self, job, specs):
            sent.extend(specs)
            return [SimpleNamespace(job_id=f"7_{i}", paths=SimpleNamespace(stdout=tmp_path / f"{i}.out"))
                    for i in range(len(specs))]

    monkeypatch.setattr(launcher, "make_executor", lambda out, options: FakeExecutor())
    monkeypatch.setattr(launcher, "_JOBS", [])  # the fake jobs must not stay for a later test's --wait
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(out), "--only", "raw",
                                 "--folds", "2", "--fold-seeds", "2", "--launcher", "local", "--json"])
    assert result.exit_code == 0, result.output
    assert [(s.assignment, s.fold) for s in sent] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert json.loads((out / "study.json").read_text())["fold_seeds"] == 2
    assert sorted(p.stem for p in (out / launcher.LEASE_DIR).glob("*.json")) == [
        "raw.fold0", "raw.fold1", "raw.foldseed1.fold0", "raw.foldseed1.fold1"]
    # the job rebuilds the same unit and settings from its spec
    seen = {}

    def fake_run_unit(unit, cfg, out_dir, log=None):
        seen.update(key=unit.key, dir=unit.dir(out_dir), fold_seed=cfg.data.fold_seed, fold=cfg.data.fold)
        return {"state": "done"}

    monkeypatch.setattr(studymod, "run_unit", fake_run_unit)
    (out / launcher.LEASE_DIR / "raw.foldseed1.fold1.json").unlink()  # as if this process were job 7_3
    launcher.StudyJob()(sent[-1])
    assert seen == {"key": "raw.foldseed1.fold1", "dir": out / "raw" / "foldseed1" / "fold1", "fold_seed": 1,
                    "fold": 1}


def test_noise_floor_by_hand():
    """Two runs, three assignments, two seeds: the sd over assignments of the seed means, the mean sd over seeds,
    and the best run per assignment, from counts built to give known balanced accuracies."""
    def counts(bas):  # (A, S) balanced accuracies -> (A, S, 1 subject, 1 AU, 4) counts with tpr = tnr = ba
        bas = np.asarray(bas, float)
        n = 1000
        tp = np.round(bas * n)
        return np.stack([tp, np.full_like(tp, n), tp, np.full_like(tp, n)], -1)[:, :, None, None, :]

    a = [[0.80, 0.82], [0.70, 0.72], [0.90, 0.88]]
    b = [[0.79, 0.79], [0.79, 0.79], [0.79, 0.79]]
    nf = noise_floor(Inputs(["a", "b"], {}, {"a": counts(a), "b": counts(b)}, ["AU01"], ["S"]))
    m = nf["metrics"]["balanced_accuracy"]
    means = np.mean(a, axis=1)
    assert m["runs"]["a"]["sd_assignment"] == pytest.approx(np.std(means, ddof=1))
    assert m["runs"]["a"]["sd_seed"] == pytest.approx(np.mean(np.std(a, axis=1, ddof=1)))
    assert m["runs"]["b"]["sd_assignment"] == pytest.approx(0.0)
    assert m["best"] == "a" and m["best_per_assignment"] == ["a", "b", "a"]
    assert m["best_changes_with_assignment"] == pytest.approx(1 / 3)
    assert m["best_changes_with_assignment_and_seed"] == pytest.approx(2 / 6)
    assert noise_floor(Inputs(["a", "b"], {}, {"a": counts(a)[:1], "b": counts(b)[:1]}, ["AU01"], ["S"])) is None


@pytest.mark.slow
def test_three_runs_two_fold_seeds_through_the_cli_reported_in_every_format(tmp_path):
    cache = make_cache(tmp_path / "c", subjects=8, videos_per_subject=1, frames=16)
    preset, out = _trio(tmp_path / "trio.yaml"), tmp_path / "s"
    args = ["study", str(preset), "--cache", str(cache), "--out", str(out), "--json"]
    first = runner.invoke(app, args + ["--folds", "2", "--fold-seeds", "2"])
    assert first.exit_code == 0, first.output
    results = json.loads(first.stdout)
    assert len(results) == 12 and {r["state"] for r in results} == {"done"}
    for name in ("raw", "snorm", "fnorm"):
        tested = []
        for root in (out / name, out / name / "foldseed1"):
            for f in range(2):
                folds = json.loads((root / f"fold{f}" / "data.json").read_text())["folds"]
                assert folds["fold_seed"] == (0 if root.name == name else 1)
                tested.append(sorted(json.loads((root / f"fold{f}" / "eval.json").read_text())["subjects"]))
        assert sorted(tested[0] + tested[1]) == sorted(tested[2] + tested[3]) == open_cache(cache).subjects
    again = runner.invoke(app, args)  # resumes: the recorded folds and fold seeds, nothing redone
    assert {r["state"] for r in json.loads(again.stdout)} == {"skipped"} and len(json.loads(again.stdout)) == 12

    paper = {}
    for fmt in ("md", "html", "csv"):
        done = runner.invoke(app, ["report", str(out), "--format", fmt, "--json", "--rope", "2",
                                   "--pair", "raw,fnorm"])
        assert done.exit_code == 0, done.output
        paper[fmt] = json.loads(done.stdout)
    ranked = paper["md"]["rankings"]["trio"]
    r = ranked["ranking"]
    assert ranked["ranked"] == ["raw", "snorm", "fnorm"] and r["assignments"] == 2 and r["subjects"] == 8
    assert sum(x["p_best"] for x in r["runs"]) == pytest.approx(1.0) and r["rope"] == pytest.approx(0.02)
    assert ("raw", "fnorm") in [(c["a"], c["b"]) for c in r["rope_comparisons"]]
    assert set(sum(r["critical_difference"]["groups"], [])) == {"fnorm", "raw", "snorm"}  # groups may overlap
    nf = ranked["noise_floor"]["metrics"]
    assert len(nf["f1"]["best_per_assignment"]) == 2 and set(nf["balanced_accuracy"]["runs"]) == {"raw", "snorm", "fnorm"}
    md = (out / "report.md").read_text()
    assert md.split("\n")[2].startswith("**Summary.** trio: Best: ")
    assert "## Which run to choose" in md and "Fold-assignment noise floor (2 assignments" in md
    assert "trio-ranks.png" in md and "trio-critical-difference.png" in md
    assert (out / "figures" / "trio-ranks.png").stat().st_size > 5000
    assert (out / "figures" / "trio-critical-difference.png").stat().st_size > 5000
    page = (out / "report.html").read_text()
    assert "<b>Summary.</b>" in page and "<h2>Which run to choose</h2>" in page and "P(best)" in page
    rows = list(csv.DictReader(io.StringIO((out / "report-rankings.csv").read_text())))
    assert [row["run"] for row in rows] == [x["run"] for x in r["runs"]]
    assert all(row["sd_over_assignments"] for row in rows)
    for fmt in ("md", "tex", "csv"):
        lit = runner.invoke(app, ["report", str(out), "--layout", "literature", "--format", fmt])
        assert lit.exit_code == 0, lit.output
    text = (out / "report-literature.md").read_text()
    assert "**Summary.** trio: Best:" in text and "sd over assignments" in text
    tex = (out / "report-literature.tex").read_text()
    assert "% Summary: trio: Best:" in tex and "fold-assignment noise floor" in tex
    assert (out / "report-literature-rankings.csv").is_file()
    bad = runner.invoke(app, ["report", str(out), "--pair", "raw,nope"])
    assert bad.exit_code == 2 and "not a ranked run" in bad.stderr
