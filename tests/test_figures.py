"""The report's figures, asserted on what matplotlib draws: one bar per run and AU inside the y-limits, a point
per run in Fig. 2 with and without intervals, readable FLOPs ticks and labels, and captions that say how the runs
differ from the paper's protocol and when the data is synthetic."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from aubench_cli import config as cfgmod  # noqa: E402
from aubench_cli.studies import figures  # noqa: E402
from aubench_cli.studies.report import collect, protocol_notes, write_report  # noqa: E402
from aubench_cli.studies.study import load_study, run_config, write_study_file  # noqa: E402

AUS = cfgmod.PAPER_AUS  # the paper's 12: every AU has a result and a published value


def write_run(run_dir: Path, cfg: cfgmod.Config, accuracies: dict[str, float], subjects: int = 3,
              batches: int = 100) -> None:
    """A finished run as train + evaluate leave it; ``subjects`` 1 gives no interval (a one-subject test split)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(cfgmod.dump_yaml(cfg))
    rows = "\n".join(f"{e},0.5,0.7" for e in range(1, cfg.train.epochs + 1))
    (run_dir / "metrics.csv").write_text("epoch,train_loss,val_mean\n" + rows + "\n")
    (run_dir / "best.pt").write_bytes(b"stand-in")
    ci = subjects > 1
    per_au = {au: {"accuracy": a, "balanced_accuracy": a - 0.01, "ci95": [a - 0.04, a + 0.02] if ci else None}
              for au, a in accuracies.items()}
    mean = float(np.mean(list(accuracies.values())))
    (run_dir / "eval.json").write_text(json.dumps({
        "arch": cfg.model.arch, "epoch": cfg.train.epochs, "batches": batches, "mean_accuracy": mean,
        "balanced_accuracy": mean - 0.01, "mean_ci95": [mean - 0.03, mean + 0.01] if ci else None,
        "ci_note": "3 subjects (< 20): jackknife" if ci else "1 test subject: no interval", "per_au": per_au}))


def make_study(root: Path, preset: str, sets: list[str], accuracies, subjects: int = 3, cache: str | None = None,
               only: list[str] | None = None) -> Path:
    """A study directory from a real preset, with ``sets`` recorded in study.json and applied to every run."""
    study = load_study(preset)
    out = root / preset
    write_study_file(study, out, sets, cache)
    for i, run in enumerate(study.runs):
        if only is not None and run.name not in only:
            continue
        cfg = run_config(study, run, sets, cache)
        write_run(out / run.name, cfg, accuracies(i), subjects)
    return out


def table1(root: Path, sets=("train.epochs=1",), cache=None, subjects: int = 3) -> Path:
    # run 0 has AU07 at 25.8 %: its bar must show, inside the y-limits
    def acc(i):
        values = {au: 0.62 + 0.02 * ((i + k) % 7) for k, au in enumerate(AUS)}
        if i == 0:
            values["AU07"] = 0.258
        return values
    return make_study(root, "table1-architectures", list(sets), acc, subjects, cache=cache)


def fig2(root: Path, subjects: int) -> Path:
    for preset in ("fig2-frames", "fig2-subjects"):
        make_study(root, preset, ["train.epochs=1"], lambda i: {au: 0.55 + 0.03 * i for au in AUS}, subjects)
    return root


def _bars(ax) -> list:
    from matplotlib.patches import Rectangle

    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_per_au_has_one_bar_per_run_and_au_inside_the_limits(tmp_path):
    (study,) = collect(table1(tmp_path))
    assert len(study.runs) == 11
    fig = figures.draw_per_au(study, "note")
    try:
        aus = study.aus() + ["AVG"]
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert [ax.get_title() for ax in panels] == [r.label for r in study.runs]  # one panel per run, in order
        for ax, run in zip(panels, study.runs):
            bars = _bars(ax)
            assert len(bars) == len(aus)  # one bar per AU and AVG
            heights = [b.get_height() for b in bars]
            expected = [100 * run.per_au[au]["accuracy"] for au in aus[:-1]] + [100 * run.mean]
            assert heights == pytest.approx(expected)
            low, high = ax.get_ylim()
            assert all(low < h < high for h in heights), (run.name, heights, (low, high))
            paper = run.paper["accuracy"]
            dashes = ax.collections[-1].get_offsets()  # the paper's dashes, one per AU, on the same x as the bars
            by_x = {round(float(x)): float(y) for x, y in np.asarray(dashes) if np.isfinite(y)}
            for i, au in enumerate(aus):
                if au in paper:
                    assert by_x[i] == pytest.approx(paper[au]) and low < paper[au] < high
        assert min(h for ax in panels for h in (b.get_height() for b in _bars(ax))) == pytest.approx(25.8)
        colours = {tuple(_bars(ax)[0].get_facecolor()) for ax in panels}
        assert len(colours) == 11  # a colour per run
    finally:
        plt.close(fig)


def test_per_au_names_runs_that_are_not_done(tmp_path):
    out = make_study(tmp_path, "table2-normalization", [], lambda i: {au: 0.7 for au in AUS}, only=["raw"])
    (study,) = collect(out)
    fig = figures.draw_per_au(study)
    try:
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert len(panels) == len(study.runs) > 1
        assert len(_bars(panels[0])) == len(AUS) + 1
        for ax, run in zip(panels[1:], study.runs[1:]):
            assert _bars(ax) == [] and "missing" in ax.get_title() and any("missing" in t.get_text() for t in ax.texts)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("subjects", [3, 1])
def test_fig2_has_a_point_per_run_with_and_without_intervals(tmp_path, subjects):
    studies = collect(fig2(tmp_path, subjects))
    fig = figures.draw_curves(studies, "note")
    try:
        assert len(fig.axes) == 2
        for ax, study in zip(fig.axes, studies):
            line = next(ln for ln in ax.lines if ln.get_marker() == "o")
            xs, ys = line.get_data()
            assert list(xs) == [r.x for r in study.runs]
            assert list(ys) == pytest.approx([100 * r.mean for r in study.runs])
            low, high = ax.get_ylim()
            assert all(low < y < high for y in ys)
            bands = [c for c in ax.collections if c.get_label().startswith("balanced accuracy")]
            notes = " ".join(t.get_text() for t in ax.texts)
            if subjects == 1:
                assert bands == [] and "no 95 % interval could be computed" in notes
            else:
                assert len(bands) == 1 and "interval" not in notes
        assert "(%)" in fig.axes[0].get_ylabel() and fig.axes[0].get_ylim()[1] > 1  # % on a % scale
    finally:
        plt.close(fig)


@pytest.mark.parametrize("subjects", [3, 1])
def test_flops_ticks_labels_and_legend(tmp_path, subjects):
    (study,) = collect(table1(tmp_path, subjects=subjects))
    fig = figures.draw_flops(study)
    try:
        ax = fig.axes[0]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
        assert minor == []  # only the major ticks (1, 2, 5 per decade) are labelled
        shown = [t for t in ax.get_xticklabels() if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert len(shown) >= 3
        boxes = [t.get_window_extent(renderer) for t in shown]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        labels = [t for t in ax.texts if t.get_text() in {r.title for r in study.runs}]
        assert len(labels) == 2 * 11  # ours and the paper's, per run
        boxes = [figures.text_box(t, renderer) for t in labels]
        overlaps = [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes))
                    for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
        assert overlaps == []
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        whiskers = [c for c in ax.containers if any(len(lc.get_segments()) for lc in c.lines[2])]
        # the legend mentions intervals exactly when some are drawn (11 runs with, none on a 1-subject split)
        assert len(whiskers) == (11 if subjects > 1 else 0)
        assert any("interval" in t for t in legend) == (subjects > 1)
        low, high = ax.get_ylim()
        assert all(low < y < high for t in labels for y in [t.xy[1]])  # every point inside the limits
    finally:
        plt.close(fig)


def test_captions_say_what_differs_from_the_paper_and_that_data_is_synthetic(tmp_path):
    # a cache made from synth data: its header names a source folder that holds synth.json
    source, cache = tmp_path / "synth", tmp_path / "cache"
    source.mkdir()
    (source / "synth.json").write_text("{}")
    cache.mkdir()
    (cache / "cache.json").write_text(json.dumps({"source": {"path": str(source)}}))
    (study,) = collect(table1(tmp_path, cache=str(cache)))
    notes = " ".join(protocol_notes(study))
    assert "SYNTHETIC" in notes and "--set train.epochs=1" in notes and "train.epochs 1 (paper 600)" in notes
    assert "100 test batches (paper 3000)" in notes
    written = write_report(study.dir, "md", tmp_path / "r.md")
    text = Path(written["report"]).read_text()
    assert "Differs from the paper's protocol: SYNTHETIC DATA" in text
    fig = figures.draw_per_au(study, "Differs from the paper's protocol: x")
    try:
        assert any(t.get_text().startswith("Differs from the paper's protocol") for t in fig.texts)
    finally:
        plt.close(fig)
    # the paper's own settings and a real source folder: nothing to declare
    (source / "synth.json").unlink()
    (plain,) = collect(make_study(tmp_path / "p", "table2-balancing", [], lambda i: {au: 0.7 for au in AUS},
                                  cache=str(cache)))
    assert protocol_notes(plain) == ["100 test batches (paper 3000)"]


def test_presets_are_what_the_fixture_assumes():
    data = yaml.safe_load((Path(cfgmod.PRESET_DIR) / "table1-architectures.yaml").read_text())
    assert len(data["runs"]) == 11 and data["train"]["epochs"] == 600
