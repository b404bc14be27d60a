"""`aubench report --layout literature`: runs as rows, AUs as columns, Avg. last, in Markdown and LaTeX; F1 and
balanced accuracy as the mean ± sd over folds and pooled over the concatenated predictions of all folds, checked
against sklearn on known predictions; seeds; a study without folds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.evaluation import stats
from aubench_cli.evaluation.evaluate import natural_metrics
from aubench_cli.studies import literature
from aubench_cli.studies.report import write_report
from aubench_cli.studies.study import parse_study, write_study_file

runner = CliRunner()
AUS = ["AU01", "AU02", "AU12"]
SUBJECTS = [f"P{i}" for i in range(9)]
FOLDS = [SUBJECTS[0:3], SUBJECTS[3:6], SUBJECTS[6:9]]
FRAMES = 40  # per subject


def _truth(seed: int = 0) -> np.ndarray:
    """Labels (subjects * FRAMES, AUs): 1, 0, a few -1 unknown; AU rates differ."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((len(SUBJECTS) * FRAMES, len(AUS))) < np.array([0.2, 0.35, 0.5])).astype(np.int8)
    labels[rng.random(labels.shape) < 0.05] = -1
    return labels


def _predictions(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Scores whose decision at 0.5 is the label flipped with probability ``noise`` (more in later subjects)."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(len(SUBJECTS)), FRAMES)[:, None]
    flip = rng.random(labels.shape) < noise * (0.5 + subject / len(SUBJECTS))
    decision = (labels == 1) ^ flip
    return np.where(decision, 0.75, 0.25)


def _write_unit(path: Path, scores: np.ndarray, labels: np.ndarray, subjects: list[str],
                fold: int | None = None, folds: int | None = None) -> None:
    """A run directory as train + eval leave it, its eval.json computed from known predictions of ``subjects``
    (checkpoint files are stand-ins: the report never opens them)."""
    path.mkdir(parents=True)
    cfg = cfgmod.Config()
    cfg.train.epochs = 1
    (path / "config.yaml").write_text(cfgmod.dump_yaml(cfg))
    (path / "metrics.csv").write_text("epoch,train_loss,val_mean\n1,0.5,0.7\n")
    (path / "best.pt").write_bytes(b"stand-in")
    rows = np.concatenate([np.arange(SUBJECTS.index(s) * FRAMES, (SUBJECTS.index(s) + 1) * FRAMES) for s in subjects])
    s, y = scores[rows], labels[rows]
    codes = np.repeat(np.arange(len(subjects)), FRAMES)
    counts = stats.unit_counts(s > 0.5, y, codes, len(subjects))
    ba = stats.balanced_accuracy(counts.sum(axis=0))
    per_au = {au: {"accuracy": float(ba[k]), "balanced_accuracy": float(ba[k]), **natural_metrics(s[:, k], y[:, k])}
              for k, au in enumerate(AUS)}
    result = {"run": str(path), "arch": "baseline", "epoch": 1, "batches": 10, "split": "test", "seed": 0,
              "mean_accuracy": float(ba.mean()), "balanced_accuracy": float(ba.mean()), "per_au": per_au,
              "digest": {"cache": "c0", "split_map": "m0", "split": "test", "seed": 0, "batches": 10, "per_au": {}},
              "subject_counts": {"subjects": subjects, "au_names": AUS, "counts": counts.tolist()},
              "subjects": subjects}
    if fold is not None:
        result.update(fold=fold, folds=folds)
    (path / "eval.json").write_text(json.dumps(result))


def _study(root: Path, name: str, seeds: int | None = None) -> Path:
    preset = {"name": name, "study": {"title": f"Study {name}", "kind": "table"},
              "runs": [{"name": "run_a", "title": "Net_A"}, {"name": "b", "title": "B"}, {"name": "c", "title": "C"}]}
    out = root / name
    write_study_file(parse_study(preset, name, root / f"{name}.yaml"), out, [], None, seeds)
    return out


NOISE = {"run_a": 0.1, "b": 0.3}  # c is never trained


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """A 3-fold study of two runs (c missing) from known predictions, and the predictions."""
    out = _study(tmp_path_factory.mktemp("lit"), "folds")
    labels = _truth()
    scores = {}
    for r, (name, noise) in enumerate(NOISE.items()):
        scores[name] = _predictions(labels, noise, r)
        for i, subjects in enumerate(FOLDS):
            _write_unit(out / name / f"fold{i}", scores[name], labels, subjects, i, 3)
    return out, labels, scores


def _rows(subjects: list[str]) -> np.ndarray:
    return np.concatenate([np.arange(SUBJECTS.index(s) * FRAMES, (SUBJECTS.index(s) + 1) * FRAMES) for s in subjects])


def test_pooled_f1_is_f1_over_the_concatenated_predictions(folded):
    out, labels, scores = folded
    (study,) = literature.read(out)
    assert study.folds == 3  # from the fold<i> folders; study.json's own count wins when it has one
    record = json.loads((out / "study.json").read_text())
    assert literature.fold_count(out, {**record, "folds": 2}) == 2
    assert literature.fold_count(out, {**record, "folds": {"k": 4}}) == 4
    for name, row in ((r.name, r) for r in study.rows if r.name in NOISE):
        f1s, bas = [], []
        for k, au in enumerate(AUS):
            known = labels[:, k] >= 0
            y, d = labels[known, k], scores[name][known, k] > 0.5
            f1s.append(f1_score(y, d))  # every subject's frames once: the folds concatenated
            bas.append(0.5 * (d[y == 1].mean() + (~d[y == 0]).mean()))
            assert row.cells["f1"][au].pooled == pytest.approx(f1s[-1]), (name, au)
            assert row.cells["balanced_accuracy"][au].pooled == pytest.approx(bas[-1]), (name, au)
            lo, hi = row.cells["f1"][au].ci95
            assert lo <= f1s[-1] <= hi
        assert row.cells["f1"][literature.AVG].pooled == pytest.approx(np.mean(f1s))
        assert row.cells["balanced_accuracy"][literature.AVG].pooled == pytest.approx(np.mean(bas))
        assert row.subjects == 9 and row.method == "jackknife-t"
        assert row.cells["f1"]["AU01"].pooled_sd is None  # no seeds


def test_fold_mean_and_sd_by_hand(folded):
    out, labels, scores = folded
    (study,) = literature.read(out)
    row = next(r for r in study.rows if r.name == "b")
    per_fold_avg = []
    for subjects in FOLDS:
        rows = _rows(subjects)
        f1s = []
        for k in range(len(AUS)):
            y = labels[rows, k]
            f1s.append(f1_score(y[y >= 0], scores["b"][rows, k][y >= 0] > 0.5))
        per_fold_avg.append(np.mean(f1s))
        for k, au in enumerate(AUS):
            assert row.cells["f1"][au].folds[FOLDS.index(subjects)] == pytest.approx(f1s[k])
    for k, au in enumerate(AUS):
        values = row.cells["f1"][au].folds
        assert row.cells["f1"][au].mean == pytest.approx(np.mean(values))
        assert row.cells["f1"][au].sd == pytest.approx(statistics.stdev(values))
    avg = row.cells["f1"][literature.AVG]
    assert avg.mean == pytest.approx(np.mean(per_fold_avg)) and avg.sd == pytest.approx(statistics.stdev(per_fold_avg))
    assert avg.mean != pytest.approx(avg.pooled)  # the two figures papers print differ here


def test_markdown_layout_runs_as_rows_aus_as_columns_avg_last(folded, tmp_path):
    out, _, _ = folded
    text = literature.literature_report(out, "md", "-")["text"]
    tables = [block for block in text.split("## Which run to choose")[0].split("### ")[1:]]  # before the rankings
    assert len(tables) == 4  # F1 and balanced accuracy, each mean over folds and pooled
    assert tables[0].startswith("F1 (%) at 0.5: mean ± sd over the 3 folds")
    assert "pooled over the 3 folds" in tables[1] and tables[2].startswith("Balanced accuracy")
    (study,) = literature.read(out)
    for block, (metric, key) in zip(tables, [("f1", "mean"), ("f1", "pooled"), ("balanced_accuracy", "mean"),
                                             ("balanced_accuracy", "pooled")]):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        assert lines[0] == "| Method | AU01 | AU02 | AU12 | Avg. |"
        body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
        assert [r[0] for r in body] == ["Net_A", "B", "C (missing)"]  # the preset's runs, in order
        assert body[2][1:] == ["-"] * 4
        for j, au in enumerate(AUS + [literature.AVG]):
            a, b = (getattr(study.rows[i].cells[metric][au], key) for i in (0, 1))
            best, second = (0, 1) if round(100 * a, 1) > round(100 * b, 1) else (1, 0)
            assert body[best][j + 1].startswith("**") and body[second][j + 1].startswith("[")
            assert body[0][j + 1].lstrip("*[").startswith(f"{100 * a:.1f}")
            if key == "mean":
                sd = study.rows[0].cells[metric][au].sd
                assert f"± {100 * sd:.1f}" in body[0][j + 1]
            else:
                lo, hi = study.rows[0].cells[metric][au].ci95
                assert body[0][j + 1].endswith(f"({100 * lo:.1f}-{100 * hi:.1f})")
    assert "c: missing" in text


def test_latex_layout_booktabs_and_escaping(folded):
    out, _, _ = folded
    text = literature.literature_report(out, "tex", "-")["text"].split("% Which run to choose")[0]
    assert text.count("\\begin{tabular}{lrrrr}") == 4 and text.count("\\toprule") == 4
    assert text.count("\\bottomrule") == 4 and text.count("\\end{table}") == 4
    block = text.split("\\begin{tabular}")[1]
    lines = [line for line in block.splitlines() if line.endswith("\\\\")]
    assert lines[0] == "Method & AU01 & AU02 & AU12 & Avg. \\\\"
    assert [line.split(" & ")[0] for line in lines[1:]] == ["Net\\_A", "B", "C (missing)"]
    assert all(len(line.split(" & ")) == 5 for line in lines)
    assert "\\textbf{" in block and "\\underline{" in block and "$\\pm$" in block and "±" not in text
    pooled = text.split("\\begin{tabular}")[2]
    assert "{\\scriptsize (" in pooled and "--" in pooled
    assert literature.tex_escape("a_b & 5% #1 $x$") == "a\\_b \\& 5\\% \\#1 \\$x\\$"


def test_seeds_pool_per_seed_then_mean_and_sd(tmp_path):
    out = _study(tmp_path, "seeded", seeds=2)
    labels = _truth()
    pooled = []
    for k in range(2):
        scores = _predictions(labels, 0.2 + 0.1 * k, 10 + k)
        for i, subjects in enumerate(FOLDS):
            _write_unit(out / "run_a" / f"fold{i}" / f"seed{k}", scores, labels, subjects, i, 3)
        known = labels[:, 0] >= 0
        pooled.append(f1_score(labels[known, 0], scores[known, 0] > 0.5))
    (study,) = literature.read(out)
    row = study.rows[0]
    assert (study.folds, study.seeds, row.state) == (3, 2, "done")
    cell = row.cells["f1"]["AU01"]
    assert cell.pooled == pytest.approx(np.mean(pooled)) and cell.pooled_sd == pytest.approx(statistics.stdev(pooled))
    assert [r.state for r in study.rows[1:]] == ["missing", "missing"]
    text = literature.literature_report(out, "md", "-")["text"]
    assert "mean ± sd over 2 seeds" in text and "each fold averaged over 2 seeds" in text


def test_a_subject_in_two_folds_has_no_pooled_figure(tmp_path):
    out = _study(tmp_path, "overlap")
    labels = _truth()
    scores = _predictions(labels, 0.1, 0)
    for i, subjects in enumerate([SUBJECTS[0:4], SUBJECTS[3:6], SUBJECTS[6:9]]):
        _write_unit(out / "run_a" / f"fold{i}", scores, labels, subjects, i, 3)
    (study,) = literature.read(out)
    row = study.rows[0]
    assert "P3 is tested in more than one fold" in row.pooled_note
    assert row.cells["f1"]["AU01"].pooled is None and row.cells["f1"]["AU01"].mean is not None


def test_a_study_without_folds_has_one_number_per_cell(tmp_path):
    out = _study(tmp_path, "plain")
    labels = _truth()
    for name, noise in NOISE.items():
        _write_unit(out / name, _predictions(labels, noise, 3), labels, SUBJECTS)
    (study,) = literature.read(out)
    assert study.folds is None
    text = literature.literature_report(out, "md", "-")["text"]
    blocks = text.split("### ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["F1 (%) at 0.5 on the test split",
                                                   "Balanced accuracy (%) on the test split"]
    saved = json.loads((out / "run_a" / "eval.json").read_text())
    first = [line for line in blocks[0].splitlines() if line.startswith("| Net_A")][0]
    cells = [c.strip().strip("*[]") for c in first.strip("|").split("|")[1:]]
    assert cells == [f"{100 * saved['per_au'][au]['f1']:.1f}" for au in AUS] + \
        [f"{100 * np.mean([saved['per_au'][au]['f1'] for au in AUS]):.1f}"]
    assert "±" not in blocks[0] and "95 % intervals of Avg. over test subjects" in blocks[0]


def test_report_cli_literature_layout(folded, tmp_path):
    out, _, _ = folded
    result = runner.invoke(app, ["report", str(out), "--layout", "literature", "--format", "tex",
                                 "--out", str(tmp_path / "t.tex")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.tex").read_text().startswith("% aubench report")
    as_json = runner.invoke(app, ["report", str(out), "--layout", "literature", "--json"])
    assert as_json.exit_code == 0, as_json.output
    written = json.loads(as_json.stdout)
    assert written["report"].endswith("report-literature.md") and written["figures"] == []
    runs = written["studies"][0]["literature"]["runs"]
    assert runs["run_a"]["subjects"] == 9 and set(runs["run_a"]["metrics"]) == {"f1", "balanced_accuracy"}
    assert runner.invoke(app, ["report", str(out), "--layout", "literature", "--format", "html"]).exit_code == 2
    refused = runner.invoke(app, ["report", str(out), "--format", "tex"])
    assert refused.exit_code == 2 and "--layout literature" in refused.output
    csv_text = runner.invoke(app, ["report", str(out), "--layout", "literature", "--format", "csv", "--out", "-"])
    assert csv_text.exit_code == 0 and csv_text.stdout.splitlines()[0].startswith("study,run,title,state,folds")


def test_the_papers_layout_of_a_fold_study_is_the_mean_over_folds(folded):
    from aubench_cli.studies.report import collect, study_table

    out, _, _ = folded
    (study,) = collect(out)
    a = study.runs[0]
    assert (a.state, a.n_seeds, a.spread_over) == ("done", 3, "folds")
    folds = [json.loads((out / "run_a" / f"fold{i}" / "eval.json").read_text()) for i in range(3)]
    assert a.mean == pytest.approx(np.mean([f["mean_accuracy"] for f in folds]))
    assert a.mean_sd == pytest.approx(statistics.stdev([f["mean_accuracy"] for f in folds]))
    header, rows = study_table(study, "md")
    assert header == ["Exp.", "Net_A", "B", "C (missing)"]
    table = {r[0]: r[1:] for r in rows}
    assert table["AVG"][0].strip("*[]").startswith(f"{100 * a.mean:.1f}") and f"± {100 * a.mean_sd:.1f}" in table["AVG"][0]
    assert table["folds"] == ["3/3", "3/3", "0/3"]
    text = write_report(out, "md", "-")["text"]
    assert "over 3 subject-exclusive folds" in text


def test_aus_option_restricts_the_columns_and_the_average(folded):
    out, labels, scores = folded
    (study,) = literature.read(out, ["AU12", "AU01"])
    row = study.rows[0]
    assert study.aus() == ["AU12", "AU01"] and row.aus == ["AU12", "AU01"]
    f1s = [f1_score(labels[labels[:, k] >= 0, k], scores["run_a"][labels[:, k] >= 0, k] > 0.5) for k in (0, 2)]
    assert row.cells["f1"][literature.AVG].pooled == pytest.approx(np.mean(f1s))
    result = runner.invoke(app, ["report", str(out), "--layout", "literature", "--aus", "AU12,AU01", "--out", "-"])
    assert result.exit_code == 0 and "| Method | AU12 | AU01 | Avg. |" in result.stdout
    assert runner.invoke(app, ["report", str(out), "--aus", "AU12"]).exit_code == 2


def test_literature_captions_say_how_the_runs_differ_from_the_paper(tmp_path):
    preset = {"name": "odd", "study": {"title": "Study odd", "kind": "table"},
              "runs": [{"name": "run_a", "title": "Net_A"}, {"name": "b", "title": "B"}]}
    out = tmp_path / "odd"
    write_study_file(parse_study(preset, "odd", tmp_path / "odd.yaml"), out, ["train.epochs=1"], None, None)
    labels = _truth()
    for name, noise in NOISE.items():
        _write_unit(out / name, _predictions(labels, noise, 3), labels, SUBJECTS)
    for fmt in ("md", "tex"):
        text = literature.literature_report(out, fmt, "-")["text"]
        assert "overrides: --set train.epochs=1" in text.replace("\\_", "_").replace("\\", ""), fmt
