"""Studies through submitit: seeds, the local executor end to end, the SLURM submission it would send (a fake
sbatch), leases that keep two jobs out of one run directory, the DDP environment, reports with the seeds' spread."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from aubench_cli.cli import app
from aubench_cli.studies import launcher
from aubench_cli.studies.report import collect, study_table, write_report
from aubench_cli.studies.study import STATUS_DIR, parse_study, write_study_file
from cachefixture import make_cache

runner = CliRunner()


def _preset(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "duo", "study": {"title": "Duo", "kind": "table"},
        "train": {"epochs": 1, "batches_per_epoch": 2, "val_batches": 1, "aug": "A"},
        "eval": {"batches": 10},
        "runs": [{"name": "raw", "set": {"train.norm": "raw"}},
                 {"name": "snorm", "set": {"train.norm": "sample-norm"}}],
    }, sort_keys=False))
    return path


@pytest.fixture()
def small(tmp_path):
    cache = make_cache(tmp_path / "cache", subjects=4, videos_per_subject=1, frames=24)
    return tmp_path, _preset(tmp_path / "duo.yaml"), cache


def test_dry_run_lists_every_run_and_seed(small):
    root, preset, cache = small
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(root / "s"),
                                 "--seeds", "3", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["name"], r["seed"]) for r in rows] == [("raw", 0), ("raw", 1), ("raw", 2),
                                                       ("snorm", 0), ("snorm", 1), ("snorm", 2)]
    assert [r["train_seed"] for r in rows] == [0, 1, 2, 0, 1, 2] and {r["state"] for r in rows} == {"new"}
    assert rows[1]["run_dir"].endswith(str(Path("raw") / "seed1"))
    plain = json.loads(runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--dry-run", "--json",
                                           "--out", str(root / "s")]).stdout)
    assert [(r["name"], r["seed"]) for r in plain] == [("raw", None), ("snorm", None)]  # no seed level unasked


@pytest.mark.slow
def test_local_launcher_runs_every_seed_and_a_rerun_redoes_nothing(small):
    root, preset, cache = small
    out = root / "st"
    args = ["study", str(preset), "--cache", str(cache), "--out", str(out), "--seeds", "2", "--launcher", "local",
            "--json"]
    first = runner.invoke(app, args + ["--wait"])
    assert first.exit_code == 0, first.output
    outcome = json.loads(first.stdout)
    assert sorted(j["key"] for j in outcome["submitted"]) == ["raw.seed0", "raw.seed1", "snorm.seed0", "snorm.seed1"]
    assert len({j["job"] for j in outcome["submitted"]}) == 4  # one submitit job per run and seed
    assert sorted(r["state"] for r in outcome["results"]) == ["done"] * 4
    for name in ("raw", "snorm"):
        evals = []
        for k in (0, 1):
            run_dir = out / name / f"seed{k}"
            assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["seed"] == k
            evals.append(json.loads((run_dir / "eval.json").read_text()))
        assert evals[0]["seed"] == evals[1]["seed"] == 0  # every seed tested on the same batches
    assert not list((out / launcher.LEASE_DIR).glob("*.json"))  # leases released at the end
    assert len([p for p in (out / launcher.LOG_DIR).iterdir() if p.name != "%j"]) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/best.pt")}
    again = runner.invoke(app, args + ["--wait"])
    assert again.exit_code == 0, again.output
    outcome = json.loads(again.stdout)
    assert outcome["submitted"] == [] and len(outcome["done"]) == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/best.pt")} == mtimes
    status = json.loads(runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(out),
                                            "--status", "--json"]).stdout)
    assert [(r["key"], r["state"]) for r in status] == [("raw.seed0", "done"), ("raw.seed1", "done"),
                                                         ("snorm.seed0", "done"), ("snorm.seed1", "done")]
    report = runner.invoke(app, ["report", str(out), "--out", "-"])
    assert report.exit_code == 0 and "±" in report.stdout and "2/2" in report.stdout


@pytest.mark.slow
def test_a_run_trained_before_seeds_is_seed_zero_and_a_moved_cache_works(small):
    root, preset, cache = small
    out = root / "st"
    first = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(out), "--only", "raw"])
    assert first.exit_code == 0, first.output
    before = (out / "raw" / "best.pt").stat().st_mtime_ns
    moved = root / "elsewhere" / "cache"
    moved.parent.mkdir()
    shutil.move(str(cache), str(moved))
    second = runner.invoke(app, ["study", str(preset), "--cache", str(moved), "--out", str(out), "--only", "raw",
                                 "--seeds", "2", "--json"])
    assert second.exit_code == 0, second.output
    results = {r["key"]: r for r in json.loads(second.stdout)}
    assert not results["raw.seed0"]["trained"] and results["raw.seed1"]["trained"]
    assert (out / "raw" / "seed0" / "best.pt").stat().st_mtime_ns == before  # moved, not retrained
    assert not (out / "raw" / "best.pt").exists()
    assert (out / STATUS_DIR / "raw.seed0.json").is_file()
    # a later command without --seeds keeps the study's seeds (never trains into the folder above them)
    third = runner.invoke(app, ["study", str(preset), "--cache", str(moved), "--out", str(out), "--only", "raw",
                                "--json"])
    assert third.exit_code == 0 and [r["key"] for r in json.loads(third.stdout)] == ["raw.seed0", "raw.seed1"]


def _fake_sbatch(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "sbatch"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\ncp \"$1\" {log}.script\necho 'Submitted batch job 4242'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    srun = bin_dir / "srun"  # submitit checks that it is on a SLURM node; it is never run here
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)


def test_slurm_submission_is_one_array_with_the_asked_resources(small, monkeypatch):
    root, preset, cache = small
    log = root / "sbatch.log"
    _fake_sbatch(root / "bin", log)
    monkeypatch.setenv("PATH", f"{root / 'bin'}:{os.environ['PATH']}")
    out = root / "st"
    args = ["study", str(preset), "--cache", str(cache), "--out", str(out), "--seeds", "2", "--launcher", "slurm",
            "--partition", "gpu", "--time", "90", "--gpus-per-run", "2", "--cpus-per-run", "16",
            "--array-parallelism", "3", "--slurm", "account=proj", "--slurm", "qos=high", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert [j["job"] for j in outcome["submitted"]] == ["4242_0", "4242_1", "4242_2", "4242_3"]
    assert len(log.read_text().splitlines()) == 1  # one sbatch call: one array for the study
    script = Path(f"{log}.script").read_text()
    for line in ("#SBATCH --array=0-3%3", "#SBATCH --partition=gpu", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --account=proj", "#SBATCH --qos=high", "#SBATCH --signal=USR2@120"):
        assert line in script, line
    assert "srun" in script
    leases = {p.stem: json.loads(p.read_text())["job"] for p in (out / launcher.LEASE_DIR).glob("*.json")}
    assert leases == {"raw.seed0": "4242_0", "raw.seed1": "4242_1", "snorm.seed0": "4242_2", "snorm.seed1": "4242_3"}
    # resubmitted while those jobs may be pending or running (no squeue to say otherwise): nothing is sent twice
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["submitted"] == [] and sorted(h["job"] for h in again["held"]) == sorted(leases.values())
    assert len(log.read_text().splitlines()) == 1
    status = json.loads(runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(out),
                                            "--status", "--json"]).stdout)
    assert {r["key"]: r["job"]["id"] for r in status} == leases and {r["state"] for r in status} == {"new"}


def test_no_sbatch_is_a_clear_error(small, monkeypatch):
    root, preset, cache = small
    monkeypatch.setenv("PATH", str(root))  # nothing there
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(root / "s"),
                                 "--launcher", "slurm"])
    assert result.exit_code == 2 and "sbatch" in result.stderr


def test_leases_keep_a_second_job_out_and_stale_ones_are_taken_over(tmp_path):
    out = tmp_path / "st"
    assert launcher.take_lease(out, "raw", "local")
    launcher.name_lease(out, "raw", str(os.getpid()), "local")  # a live process holds it
    assert not launcher.take_lease(out, "raw", "local")
    assert not launcher.claim_lease(out, "raw", "999999")  # another job may not train it
    assert launcher.claim_lease(out, "raw", str(os.getpid()))  # its own job may
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    launcher.name_lease(out, "raw", str(dead.pid), "local")
    assert launcher.take_lease(out, "raw", "local")  # its process is gone: stale, taken over
    launcher.release_lease(out, "raw", "someone-else")
    assert (out / launcher.LEASE_DIR / "raw.json").is_file()  # only the lease's own job releases it


def test_ddp_environment_from_submitit():
    env = SimpleNamespace(num_tasks=4, global_rank=3, local_rank=1, num_nodes=2, hostnames=["gpu07", "gpu08"])
    got = launcher.ddp_environment(env, "4242_3")
    assert got == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
                   "MASTER_ADDR": "gpu07", "MASTER_PORT": str(20000 + 42423 % 20000)}
    assert launcher.ddp_environment(SimpleNamespace(num_tasks=1), "1") == {}


def _write_eval(run_dir: Path, accs: dict[str, float], seed_config: int) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"arch": "baseline"}, "train": {"epochs": 1,
                                                                                                   "seed": seed_config}}))
    (run_dir / "metrics.csv").write_text("epoch,val_mean\n1,0.5\n")
    (run_dir / "best.pt").write_bytes(b"")
    mean = sum(accs.values()) / len(accs)
    (run_dir / "eval.json").write_text(json.dumps({
        "arch": "baseline", "epoch": 1, "batches": 10, "mean_accuracy": mean, "mean_ci95": [mean - 0.1, mean + 0.1],
        "per_au": {au: {"accuracy": a, "ci95": [a - 0.1, a + 0.1]} for au, a in accs.items()}}))


def test_report_shows_mean_and_sd_over_seeds(tmp_path):
    preset = {"name": "duo", "study": {"title": "Duo", "kind": "table"},
              "runs": [{"name": "a", "title": "A"}, {"name": "b", "title": "B"}]}
    out = tmp_path / "st"
    write_study_file(parse_study(preset, "duo", tmp_path / "duo.yaml"), out, [], None, seeds=3)
    values = {"a": [(0.70, 0.60), (0.74, 0.62), (0.72, 0.64)], "b": [(0.80, 0.50), (0.60, 0.52), (0.70, 0.54)]}
    for name, seeds in values.items():
        for k, (au1, au2) in enumerate(seeds):
            _write_eval(out / name / f"seed{k}", {"AU01": au1, "AU02": au2}, k)
    study = collect(out)[0]
    a, b = study.runs
    assert a.state == b.state == "done" and a.n_seeds == 3
    assert a.per_au["AU01"]["accuracy"] == pytest.approx(0.72) and a.per_au["AU01"]["accuracy_sd"] == pytest.approx(0.02)
    assert b.per_au["AU01"]["accuracy_sd"] == pytest.approx(0.10)
    assert a.mean == pytest.approx((0.65 + 0.68 + 0.68) / 3)
    header, rows = study_table(study, "md")
    table = {row[0]: row[1:] for row in rows}
    # AU01: a's mean 72.0 beats b's 70.0 (b's spread is wider, the marks go by the mean); AU02: 62.0 beats 52.0
    assert table["AU01"] == ["**72.0** ± 2.0", "[70.0] ± 10.0"]
    assert table["AU02"] == ["**62.0** ± 2.0", "[52.0] ± 2.0"]
    assert table["seeds"] == ["3/3", "3/3"]
    text = write_report(out, "md", "-")["text"]
    assert "mean ± standard deviation over 3 training seeds" in text
    csv_text = write_report(out, "csv", "-")["text"]
    assert csv_text.count(",mean,done,") == 6 and ",2,done,AU01,72.00," in csv_text  # mean rows, then each seed
    # one seed missing: the run is not shown as done on the others' mean
    shutil.rmtree(out / "b" / "seed2")
    b = collect(out)[0].runs[1]
    assert b.state != "done" and "2 of 3 seeds done" in b.detail and b.mean is None


def test_catalog_matches_the_live_registry_and_costs():
    # The dry run and the submission plan without torch from this table; a network changed without rewriting it
    # (python -m aubench_cli.studies.catalog) must fail here.
    from aubench_cli.models import get_model_info, list_models
    from aubench_cli.profiling import count_costs
    from aubench_cli.models import create_model
    from aubench_cli.studies import catalog

    assert sorted(catalog._table()) == sorted(list_models())
    for arch in list_models():
        info = get_model_info(arch)
        assert catalog.from_scratch(arch) == info.from_scratch and catalog.local_weights_note(arch) == info.local_weights_note
    for arch in ("baseline", "lightcnn9", "mobilenetv2"):  # linear in the outputs: checked at K = 12
        live = count_costs(create_model(arch, 12))
        assert catalog.costs(arch, 12) == {"flops": live.flops, "params": live.params,
                                           "memory_mb": round(live.memory_mb, 4)}


def test_dry_run_and_submission_import_no_torch(small, tmp_path):
    root, preset, cache = small
    code = ("import sys\nfrom aubench_cli.cli import app\n"
            f"args = ['study', 'table1-architectures', '--cache', {str(cache)!r}, '--dry-run', '--out', {str(root / 'd')!r}]\n"
            "try:\n    app(args, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "baseline" in out.stdout and out.stdout.strip().endswith("TORCH False")
