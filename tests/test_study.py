"""Study presets and `aubench study`: every preset resolves, the paper's numbers are the paper's, a tiny study runs
end to end and resumes without redoing work, shards split a study exactly, the dry run's cost estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.errors import UsageError
from aubench_cli.models import get_model_info, list_models
from aubench_cli.profiling import PAPER_TABLE1
from aubench_cli.training.sampling import BALANCING
from aubench_cli.studies.study import (
    TRAIN_FLOPS_FACTOR,
    load_study,
    parse_shard,
    run_config,
    select_runs,
    weights_problem,
)
from aubench_cli.training.transforms import check_norm
from cachefixture import make_cache

runner = CliRunner()
PRESETS = sorted(cfgmod.PRESET_DIR.glob("*.yaml"))
STUDIES = ["table1-architectures", "table2-normalization", "table2-augmentation", "table2-balancing",
           "fig2-frames", "fig2-subjects"]
PAPER_AUS = cfgmod.PAPER_AUS + ["AVG"]


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_parses_and_each_run_resolves(path):
    # the shared settings alone, as `aubench train --preset NAME` reads them (study keys ignored)
    shared = cfgmod.resolve(path)
    assert shared.train.epochs == 600 and shared.eval.batches == 3000
    data = yaml.safe_load(path.read_text())
    if "runs" not in data:
        return
    study = load_study(path)
    assert study.name == path.stem == data["name"]
    assert len({r.name for r in study.runs}) == len(study.runs) >= 4
    for run in study.runs:
        cfg = run_config(study, run, cache="somewhere")
        get_model_info(cfg.model.arch)
        assert cfg.train.balance in BALANCING
        check_norm(cfg.train.norm)
        assert cfg.train.aug in "ABCD" and 0 < cfg.data.frames_frac <= cfg.data.subjects_frac <= 1
        assert cfg.data.cache == "somewhere"


def test_all_paper_studies_exist():
    assert set(STUDIES) <= {p.stem for p in PRESETS}


def test_table1_runs_follow_the_paper():
    study = load_study("table1-architectures")
    assert [r.name for r in study.runs] == list_models()  # the registry's Table I order
    for run in study.runs:
        cfg = run_config(study, run)
        info = get_model_info(cfg.model.arch)
        assert (cfg.train.optimizer, cfg.train.lr) == (info.optimizer, info.lr)
        if info.from_scratch:
            assert not cfg.model.pretrained and weights_problem(cfg) is None
        elif info.pretrained_source:
            assert cfg.model.pretrained and weights_problem(cfg) is None
        else:  # LightCNN-9/29, FaceVGG: only a user's file; without one the run is refused, never trained from scratch
            assert run.name in ("lightcnn9", "lightcnn29", "facevgg")
            assert "--weights" in weights_problem(cfg)
            assert weights_problem(run_config(study, run, weights="/w.pth")) is None
        # Table I's costs, as printed, equal profiling's copy of them
        paper = PAPER_TABLE1[run.name]
        assert run.paper["flops_m"] * 1e6 == pytest.approx(paper["flops"])
        assert run.paper["params_k"] * 1e3 == paper["params"] and run.paper["memory_mb"] == paper["memory_mb"]
        assert list(run.paper["accuracy"]) == PAPER_AUS
    by_name = {r.name: r.paper["accuracy"] for r in study.runs}
    assert by_name["vgg16"]["AVG"] == 81.8 and by_name["lightcnn29"]["AU04"] == 79.7
    assert by_name["baseline"]["AU12"] == 84.8 and by_name["densenet121"]["AU09"] == 79.7
    assert by_name["resnet50"]["AU01"] == 82.8 and by_name["emonets"]["AU28"] == 84.9


def test_table2_numbers_and_smile_is_au12():
    cols = {}
    for name in ("table2-normalization", "table2-augmentation", "table2-balancing"):
        study = load_study(name)
        for run in study.runs:
            assert list(run.paper["accuracy"]) == PAPER_AUS
            cols[(name, run.name)] = run.paper["accuracy"]
    # the baseline column of each part (raw, oversample) is Table I's baseline, its "Smile" row Table I's AU12
    table1 = {r.name: r.paper["accuracy"] for r in load_study("table1-architectures").runs}["baseline"]
    assert cols[("table2-normalization", "raw")] == table1 == cols[("table2-balancing", "oversample")]
    assert cols[("table2-augmentation", "D")]["AVG"] == 77.6 and cols[("table2-augmentation", "A")]["AU12"] == 83.5
    assert cols[("table2-balancing", "cost")]["AU25"] == 67.6 and cols[("table2-normalization", "feature-norm")]["AU09"] == 78.9
    settings = {(n, r): run_config(load_study(n), load_study(n).run(r)) for n, r in cols}
    assert settings[("table2-normalization", "sample-center")].train.norm == "sample-center"
    assert settings[("table2-augmentation", "B")].train.aug == "B"
    assert settings[("table2-balancing", "undersample")].train.balance == "undersample"


def test_fig2_fractions_and_no_paper_numbers():
    frames, subjects = load_study("fig2-frames"), load_study("fig2-subjects")
    for study, expect in ((frames, lambda x: (x / 100, 1.0)), (subjects, lambda x: (0.2, x / 100))):
        assert [r.x for r in study.runs] == [20, 40, 60, 80, 100]
        for run in study.runs:
            cfg = run_config(study, run)
            assert (cfg.data.frames_frac, cfg.data.subjects_frac) == pytest.approx(expect(run.x))
            assert run.paper == {}


def test_shards_are_disjoint_and_complete():
    study = load_study("table1-architectures")
    names = [r.name for r in study.runs]
    for n in range(1, 6):
        shards = [[r.name for r in select_runs(study, shard=(i, n))] for i in range(n)]
        flat = [name for shard in shards for name in shard]
        assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
    assert [r.name for r in select_runs(study, only=["vgg16", "baseline,emonets"], shard=(0, 2))] == ["baseline", "vgg16"]
    for bad in ("4/4", "1", "-1/3", "a/b", "0/0"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    with pytest.raises(UsageError) as info:
        select_runs(study, only=["vgg61"])
    assert "vgg16" in info.value.hint


def test_shard_through_the_cli(tmp_path):
    result = runner.invoke(app, ["study", "table2-augmentation", "--dry-run", "--json", "--shard", "1/3",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.stdout)] == ["B"]
    result = runner.invoke(app, ["study", "table2-augmentation", "--dry-run", "--shard", "3/3"])
    assert result.exit_code == 2 and "--shard" in result.stderr


def test_bad_preset_name_names_close_matches():
    result = runner.invoke(app, ["study", "table1-architecture", "--dry-run"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "table1-architectures" in result.stderr
    assert "Traceback" not in result.output


def test_a_preset_without_runs_is_not_a_study():
    result = runner.invoke(app, ["study", "paper-baseline", "--dry-run"])
    assert result.exit_code == 2 and "runs" in result.stderr


# ----------------------------------------------------------------------------------------------------------------
# a tiny study, end to end


def _tiny_preset(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "tiny", "description": "two quick runs and one without weights",
        "study": {"title": "Tiny", "kind": "table"},
        "train": {"epochs": 1, "batches_per_epoch": 3, "val_batches": 1, "aug": "A"},
        "eval": {"batches": 20},
        "runs": [
            {"name": "raw", "title": "Raw", "set": {"train.norm": "raw"}, "paper": {"accuracy": {"AU01": 75.5, "AVG": 76.3}}},
            {"name": "snorm", "title": "Sample norm", "set": {"train.norm": "sample-norm"}},
            {"name": "lc9", "title": "LightCNN-9", "set": {"model.arch": "lightcnn9"}},
        ],
    }, sort_keys=False))
    return path


def test_dry_run_json_schema_and_cost(tmp_path):
    cache = make_cache(tmp_path / "cache", subjects=4, videos_per_subject=1, frames=10)
    preset = _tiny_preset(tmp_path / "tiny.yaml")
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--dry-run", "--json",
                                 "--set", "train.epochs=4", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["raw", "snorm", "lc9"]
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    for r in rows:
        assert isinstance(r["arch"], str) and r["state"] == "new"
        assert r["aus"] == 5 and r["batch_size"] == 8 * 5 and r["epochs"] == 4  # --set applies to every run
        assert r["train_images"] == 4 * 3 * 40
        fwd = r["forward_flops_per_image"]
        assert r["train_flops"] == TRAIN_FLOPS_FACTOR * fwd * r["train_images"]
        assert r["total_flops"] == r["train_flops"] + fwd * (4 * 1 * 40 + 20 * 40)
    assert rows[0]["forward_flops_per_image"] == pytest.approx(PAPER_TABLE1["baseline"]["flops"], rel=0.01)
    assert rows[2]["problem"] and rows[0]["problem"] is None
    table = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--dry-run"])
    assert table.exit_code == 0 and "needs weights" in table.stdout and "x 3" in table.stdout


@pytest.mark.slow
def test_study_end_to_end_resumes_without_redoing(tmp_path):
    cache = make_cache(tmp_path / "cache", subjects=5, videos_per_subject=1, frames=30)
    preset = _tiny_preset(tmp_path / "tiny.yaml")
    out = tmp_path / "studies" / "tiny"
    args = ["study", str(preset), "--cache", str(cache), "--out", str(out), "--json"]

    first = runner.invoke(app, args)
    # lc9 has no weights: it fails clearly, the others are done, and the exit code says a run failed
    assert first.exit_code == 1, first.output
    assert "lc9" in first.stderr and "1 of 3 runs failed" in first.stderr
    results = {r["name"]: r for r in json.loads(first.stdout)}
    assert results["raw"]["state"] == results["snorm"]["state"] == "done"
    assert results["lc9"]["state"] == "failed" and "--weights lc9=FILE" in results["lc9"]["error"]
    assert not (out / "lc9").exists()  # never trained from random init
    assert json.loads((out / "status" / "lc9.json").read_text())["state"] == "failed"
    record = json.loads((out / "study.json").read_text())
    assert record["preset"] == "tiny" and [r["name"] for r in record["runs"]] == ["raw", "snorm", "lc9"]
    for name, norm in (("raw", "raw"), ("snorm", "sample-norm")):
        for f in ("best.pt", "last.pt", "metrics.csv", "summary.json", "config.yaml", "data.json", "eval.json"):
            assert (out / name / f).is_file(), (name, f)
        saved = yaml.safe_load((out / name / "config.yaml").read_text())
        assert saved["train"]["norm"] == norm and saved["train"]["batches_per_epoch"] == 3
        assert json.loads((out / name / "eval.json").read_text())["batches"] == 20
    mtimes = {n: (out / n / "best.pt").stat().st_mtime_ns for n in ("raw", "snorm")}

    # again: nothing redone; then eval.json removed: only evaluation is redone
    (out / "snorm" / "eval.json").unlink()
    second = runner.invoke(app, args + ["--only", "raw,snorm"])
    assert second.exit_code == 0, second.output
    results = {r["name"]: r for r in json.loads(second.stdout)}
    assert results["raw"]["state"] == "skipped" and not results["raw"]["evaluated"]
    assert not results["snorm"]["trained"] and results["snorm"]["evaluated"]
    assert (out / "snorm" / "eval.json").is_file()
    assert {n: (out / n / "best.pt").stat().st_mtime_ns for n in ("raw", "snorm")} == mtimes

    # a longer schedule resumes the run from its checkpoint (extends it) and re-evaluates
    third = runner.invoke(app, args + ["--only", "raw", "--set", "train.epochs=2"])
    assert third.exit_code == 0, third.output
    assert json.loads(third.stdout)[0]["trained"]
    lines = (out / "raw" / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]

    # the study is one TensorBoard log root: each run under its name, the extended run's curve each epoch once
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    board = EventMultiplexer().AddRunsFromDirectory(str(out))
    board.Reload()
    assert sorted(board.Runs()) == ["raw", "snorm"]
    assert [e.step for e in board.Scalars("raw", "train/loss")] == [1, 2]
    assert [e.step for e in board.Scalars("snorm", "val/mean_accuracy")] == [1]
    assert "test/mean_accuracy" in board.Runs()["snorm"]["scalars"]  # eval's figures, for the HParams view

    # a run directory holding other settings is refused, not mixed
    fourth = runner.invoke(app, args + ["--only", "snorm", "--set", "train.pos_per_au=2"])
    assert fourth.exit_code == 1 and "other settings" in fourth.stdout + fourth.stderr

    report = runner.invoke(app, ["report", str(out), "--out", "-"])
    assert report.exit_code == 0, report.output
    assert "| AU01 |" in report.stdout and "lc9" in report.stdout and "failed" in report.stdout
    # the HTML page: each run's settings with its cache's content identity
    report = runner.invoke(app, ["report", str(out), "--format", "html", "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r.html").read_text()
    identity = json.loads((out / "raw" / "data.json").read_text())["cache_identity"]
    assert f"<code>{identity}</code>" in page and "<td>sample-norm</td>" in page


def test_missing_cache_is_one_error_before_any_run(tmp_path):
    preset = _tiny_preset(tmp_path / "tiny.yaml")
    result = runner.invoke(app, ["study", str(preset), "--cache", str(tmp_path / "nope"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "no aubench cache" in result.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_study_cache_is_used_for_resume_and_evaluation(tmp_path):
    """--cache is where the study trains and tests: a moved cache works for resume and evaluation, a different
    cache at the old path is refused for resume, and an evaluation on other content is redone."""
    cache = make_cache(tmp_path / "cache", subjects=5, videos_per_subject=1, frames=30)
    preset = tmp_path / "one.yaml"
    preset.write_text(yaml.safe_dump({
        "name": "one", "study": {"title": "One", "kind": "table"},
        "train": {"epochs": 1, "batches_per_epoch": 3, "val_batches": 1, "aug": "A"}, "eval": {"batches": 10},
        "runs": [{"name": "raw", "set": {"train.norm": "raw"}}]}))
    out = tmp_path / "s"
    args = ["study", str(preset), "--out", str(out), "--json"]
    first = runner.invoke(app, args + ["--cache", str(cache)])
    assert first.exit_code == 0, first.output
    identity = json.loads((out / "raw" / "eval.json").read_text())["digest"]["cache"]

    moved = tmp_path / "moved"
    cache.rename(moved)
    resumed = runner.invoke(app, args + ["--cache", str(moved), "--set", "train.epochs=2"])
    assert resumed.exit_code == 0, resumed.output
    (r,) = json.loads(resumed.stdout)
    assert r["trained"] and r["evaluated"]
    saved = json.loads((out / "raw" / "eval.json").read_text())
    assert saved["cache"] == str(moved) and saved["digest"]["cache"] == identity
    assert yaml.safe_load((out / "raw" / "config.yaml").read_text())["data"]["cache"] == str(moved.resolve())
    again = runner.invoke(app, args + ["--cache", str(moved), "--set", "train.epochs=2"])
    assert json.loads(again.stdout)[0]["state"] == "skipped"  # same content: nothing redone

    # a finished run, its cache moved again: an evaluation recorded on other content is redone, on the study's cache
    moved_again = tmp_path / "moved-again"
    moved.rename(moved_again)
    moved = moved_again
    saved["digest"]["cache"] = "0" * 32
    (out / "raw" / "eval.json").write_text(json.dumps(saved))
    redo = runner.invoke(app, args + ["--cache", str(moved), "--set", "train.epochs=2"])
    (r,) = json.loads(redo.stdout)
    assert r["evaluated"] and not r["trained"], redo.output
    redone = json.loads((out / "raw" / "eval.json").read_text())
    assert redone["digest"]["cache"] == identity and redone["cache"] == str(moved)

    # other content where the study points: resuming there is refused, naming the content
    other = make_cache(tmp_path / "cache", subjects=5, videos_per_subject=1, frames=30, seed=3)
    refused = runner.invoke(app, args + ["--cache", str(other), "--set", "train.epochs=3"])
    assert refused.exit_code == 1 and "holds other content" in " ".join(refused.stderr.split())

    # aubench train --resume RUN --cache P: accepted for the same content, refused for other content
    ok = runner.invoke(app, ["train", "--resume", str(out / "raw"), "--cache", str(moved), "--epochs", "3"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["train", "--resume", str(out / "raw"), "--cache", str(other), "--epochs", "4"])
    assert bad.exit_code == 2 and "holds other content" in " ".join(bad.stderr.split())


def test_study_says_after_each_runs_first_epoch_how_long_its_rest_takes(tmp_path, monkeypatch):
    from aubench_cli.commands import _render

    monkeypatch.setattr(_render, "PACE_NOTE_MIN_S", 0.0)  # these runs take seconds, not the protocol's hours
    cache = make_cache(tmp_path / "cache", subjects=5, videos_per_subject=1, frames=30)
    preset = _tiny_preset(tmp_path / "tiny.yaml")
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(tmp_path / "s"),
                                 "--only", "raw,snorm", "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    for name in ("raw", "snorm"):
        notes = [line for line in result.stderr.splitlines() if line.startswith(f"{name}: at this pace")]
        assert len(notes) == 1 and "the other 2 epochs take about" in notes[0], result.stderr
