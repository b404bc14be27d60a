"""`aubench report` from fixture results: the paper's layout (best bold, second [bracketed], paper beside ours),
runs that are not done shown as such, CSV and HTML, and the figures as real PNG images."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.text import Text
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.studies.report import collect, study_table, write_report
from aubench_cli.studies.html import write_html
from aubench_cli.studies.study import STATUS_DIR, parse_study, write_study_file

runner = CliRunner()
AUS = ["AU01", "AU02", "AU12"]


def _write_run(run_dir: Path, arch: str, accuracies: dict[str, float] | None, epochs_done: int = 2,
               epochs: int = 2) -> None:
    """A run directory as train + evaluate leave it (checkpoint files are stand-ins: the report never opens them)."""
    run_dir.mkdir(parents=True)
    cfg = cfgmod.Config()
    cfg.model.arch, cfg.train.epochs = arch, epochs
    (run_dir / "config.yaml").write_text(cfgmod.dump_yaml(cfg))
    rows = "\n".join(f"{e},0.5,0.7" for e in range(1, epochs_done + 1))
    (run_dir / "metrics.csv").write_text("epoch,train_loss,val_mean\n" + rows + "\n")
    (run_dir / "best.pt").write_bytes(b"stand-in")
    if accuracies is None:
        return
    # balanced accuracy 1 point under the batches' figure; three test subjects whose counts give it exactly
    per_au = {au: {"accuracy": a, "balanced_accuracy": a - 0.01, "ci95": [a - 0.03, a + 0.01], "n": 800}
              for au, a in accuracies.items()}
    mean = float(np.mean(list(accuracies.values())))
    counts = [[[round(1000 * (a - 0.01)), 1000, round(1000 * (a - 0.01)), 1000] for a in accuracies.values()]
              for _ in range(3)]
    for subject, shift in ((0, 40), (1, -40)):  # subjects differ, the mean stays
        for row in counts[subject]:
            row[0] += shift
    (run_dir / "eval.json").write_text(json.dumps({
        "run": str(run_dir), "arch": arch, "epoch": epochs_done, "batches": 100, "split": "test", "seed": 0,
        "checkpoint": "best", "mean_accuracy": mean, "balanced_accuracy": mean - 0.01,
        "mean_ci95": [mean - 0.02, mean], "per_au": per_au, "ci_note": "3 subjects (< 20): jackknife",
        "digest": {"cache": "c0", "split_map": "m0", "split": "test", "seed": 0, "batches": 100, "per_au": {}},
        "subject_counts": {"subjects": ["S1", "S2", "S3"], "au_names": list(accuracies), "counts": counts}}))


def _study(root: Path, preset: dict) -> Path:
    out = root / preset["name"]
    write_study_file(parse_study(preset, preset["name"], root / f"{preset['name']}.yaml"), out, [], None)
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    table = _study(root, {
        "name": "arch", "study": {"title": "Architectures", "kind": "table", "costs": True},
        "runs": [
            {"name": "a", "title": "A", "set": {"model.arch": "baseline"},
             "paper": {"accuracy": {"AU01": 75.5, "AU02": 67.1, "AVG": 76.3}, "flops_m": 81.6, "params_k": 659,
                       "memory_mb": 4.71}},
            {"name": "b", "title": "B", "set": {"model.arch": "emonets"},
             "paper": {"accuracy": {"AU01": 77.3, "AU02": 69.0, "AVG": 77.8}, "flops_m": 739.4, "params_k": 567,
                       "memory_mb": 6.32}},
            {"name": "c", "title": "C", "set": {"model.arch": "baseline"}},
            {"name": "d", "title": "D", "set": {"model.arch": "baseline"}},
            {"name": "e", "title": "E", "set": {"model.arch": "baseline"}},
            {"name": "f", "title": "F", "set": {"model.arch": "baseline"}},
        ]})
    _write_run(table / "a", "baseline", {"AU01": 0.80, "AU02": 0.60, "AU12": 0.90})
    _write_run(table / "b", "emonets", {"AU01": 0.70, "AU02": 0.65, "AU12": 0.85})
    _write_run(table / "c", "baseline", {"AU01": 0.75, "AU02": 0.65, "AU12": 0.80})
    # d: never trained; e: 1 of 2 epochs, with a stale eval.json that must not count; f: failed
    _write_run(table / "e", "baseline", {"AU01": 0.99, "AU02": 0.99, "AU12": 0.99}, epochs_done=1)
    (table / STATUS_DIR).mkdir()
    (table / STATUS_DIR / "f.json").write_text(json.dumps({"run": "f", "state": "failed", "error": "boom"}))
    for name, panel, label in (("fig2-frames", "left", "% of frames"), ("fig2-subjects", "right", "% of subjects")):
        curve = _study(root, {
            "name": name, "study": {"title": name, "kind": "curve", "figure": "fig2", "panel": panel, "x_label": label,
                                    "paper_ref": f"Fig. 2 ({panel})"},
            "runs": [{"name": f"p{x}", "title": f"{x} %", "x": x, "set": {"data.frames_frac": 0.2}} for x in (20, 40, 60, 80, 100)]})
        for i, x in enumerate((20, 60, 80, 100)):  # 40 % missing
            _write_run(curve / f"p{x}", "baseline", {au: 0.70 + 0.02 * i + 0.01 * k for k, au in enumerate(AUS)})
    return root


def _md_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Exp."):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_states_of_runs(studies):
    (arch,) = collect(studies / "arch")
    assert {r.name: r.state for r in arch.runs} == {"a": "done", "b": "done", "c": "done", "d": "missing",
                                                   "e": "unfinished", "f": "failed"}
    assert arch.aus() == AUS
    assert [s.name for s in collect(studies)] == ["fig2-frames", "fig2-subjects", "arch"]  # the paper's order first


def test_markdown_layout_marks_best_and_second(studies, tmp_path):
    written = write_report(studies / "arch", "md", tmp_path / "r.md")
    text = Path(written["report"]).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Exp."))
    assert header == "| Exp. | A | B | C | D (missing) | E (unfinished) | F (failed) |"
    rows = _md_rows(text)
    # ours ranked among ours, the paper's among the paper's (in parentheses)
    assert rows["AU01"] == ["**80.0** ([75.5])", "70.0 (**77.3**)", "[75.0] (-)", "missing (-)", "unfinished (-)",
                            "failed (-)"]
    assert rows["AU02"][:3] == ["[60.0] ([67.1])", "**65.0** (**69.0**)", "**65.0** (-)"]  # a tie shares the best
    assert rows["AU12"][:3] == ["**90.0** (-)", "[85.0] (-)", "80.0 (-)"]
    assert rows["AVG"][:3] == ["**76.7** ([76.3])", "[73.3] (**77.8**)", "[73.3] (-)"]  # ties share second
    assert rows["balanced AVG (95 % CI)"][0] == "75.7 (74.7-76.7)"
    assert rows["FLOPs"][0].endswith("(81.6M)") and rows["#params"][1].endswith("(567K)")
    assert rows["Memory"][0].endswith("(4.71MB)") and rows["FLOPs"][3] == "81.6M"  # ours even for a missing run
    assert "- d: missing (not trained)" in text and "- e: unfinished (1/2 epochs)" in text and "- f: failed (boom)" in text
    assert "99.0" not in text  # the unfinished run's stale evaluation is not reported
    assert "![arch-per-au](figures/arch-per-au.png)" in text
    # the resolution of the split, under the table: three subjects cannot separate anything
    line = next(line for line in text.splitlines() if line.startswith("Resolution of the test split"))
    assert "(3 subjects, 3 pairs of runs" in line and "half-width" in line and "80 % power" in line
    assert "no difference can be called significant" in line


def test_csv_and_html(studies, tmp_path):
    write_report(studies, "csv", tmp_path / "r.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    by = {(r["study"], r["run"], r["au"]): r for r in rows}
    assert by[("arch", "a", "AU01")]["accuracy"] == "80.00" and by[("arch", "a", "AU01")]["paper"] == "75.5"
    assert by[("arch", "d", "AVG")]["state"] == "missing" and by[("arch", "d", "AVG")]["accuracy"] == ""
    assert by[("fig2-frames", "p40", "AU01")]["state"] == "missing"
    assert len(rows) == 6 * 4 + 2 * 5 * 4  # every run of every study, 3 AUs + AVG each
    html = write_html(studies / "arch", tmp_path / "r.html")
    text = Path(html["report"]).read_text()
    assert "<td><b>80.0</b> ([75.5])</td>" in text and "<img src='data:image/png;base64," in text  # embedded


def test_figures_are_png_images(studies, tmp_path):
    import matplotlib.image as mpimg

    written = write_report(studies, "md", tmp_path / "all" / "report.md")
    ranks = sorted(Path(p).name for p in written["figures"] if "-ranks" in p or "-critical-difference" in p)
    assert "arch-ranks.png" in ranks  # the rankings' figures (tests/test_fold_seeds.py)
    names = sorted(Path(p).name for p in written["figures"] if Path(p).name not in ranks)
    assert names == ["arch-accuracy-vs-flops.png", "arch-per-au.png", "fig2-frames-per-au.png", "fig2.png",
                     "fig2-subjects-per-au.png"] or set(names) == {
        "arch-accuracy-vs-flops.png", "arch-per-au.png", "fig2-frames-per-au.png", "fig2.png",
        "fig2-subjects-per-au.png"}
    for p in written["figures"]:
        image = mpimg.imread(p)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300 and image.shape[2] in (3, 4)
        assert image[..., :3].std() > 0.01  # something is drawn
    fig2 = mpimg.imread(tmp_path / "all" / "figures" / "fig2.png")
    assert fig2.shape[1] > 2 * fig2.shape[0]  # two panels side by side
    assert "![fig2](figures/fig2.png)" in (tmp_path / "all" / "report.md").read_text()


def test_report_cli_and_errors(studies, tmp_path):
    result = runner.invoke(app, ["report", str(studies / "arch"), "--out", "-"])
    assert result.exit_code == 0, result.output
    assert "| AU01 | **80.0**" in result.stdout and "not done: d (missing)" in result.stderr
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "study.json" in result.stderr
    result = runner.invoke(app, ["report", str(studies / "arch"), "--format", "pdf", "--out", "-"])
    assert result.exit_code == 2 and "pdf" in result.output and "html" in result.output  # a choice: --help lists them


def test_resolution_by_hand(studies):
    from aubench_cli.evaluation import stats

    (arch,) = collect(studies / "arch")
    res = write_report(studies / "arch", "md", studies / "r.md")["studies"][0]["resolution"]
    by_pair = {(p["a"], p["b"]): p for p in res["pairs"]}
    assert set(by_pair) == {("a", "b"), ("a", "c"), ("b", "c")}  # the done runs only
    runs = {r.name: r for r in arch.runs}
    direct = stats.paired(np.asarray(runs["a"].subject_counts["counts"]), np.asarray(runs["b"].subject_counts["counts"]),
                          np.random.default_rng(0))
    assert by_pair[("a", "b")]["half_width"] == pytest.approx(direct["mean"]["half_width"])
    assert by_pair[("a", "b")]["diff"] == pytest.approx(runs["a"].balanced - runs["b"].balanced)
    assert res["half_width"]["median"] == pytest.approx(np.median([p["half_width"] for p in res["pairs"]]))


def test_marks_are_the_same_in_eval_and_report(tmp_path):
    """Values that tie when printed (76.49 and 76.51 both print 76.5) get the same mark in both tables."""
    from aubench_cli.commands.eval import ranked_cells

    values = [0.7649, 0.7651, 0.7640, 0.70]
    root = tmp_path / "s"
    preset = {"name": "tie", "study": {"title": "Tie", "kind": "table"},
              "runs": [{"name": f"r{i}", "title": f"R{i}", "set": {"model.arch": "baseline"}} for i in range(4)]}
    out = _study(root, preset)
    for i, v in enumerate(values):
        _write_run(out / f"r{i}", "baseline", {"AU01": v, "AU02": 0.5})
    (study,) = collect(out)
    _, rows = study_table(study, "md")
    report = [("1" if c.startswith("**") else "2" if c.startswith("[") else "-") for c in rows[0][1:]]
    cells = ranked_cells(values)
    printed = [Text.from_markup(c) for c in cells]  # as the terminal shows them
    eval_marks = [("1" if any(span.style == "bold" for span in t.spans) else "2" if t.plain.startswith("[") else "-")
                  for t in printed]
    assert report == eval_marks == ["1", "1", "2", "-"]
