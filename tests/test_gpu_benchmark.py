"""benchmarks/gpu.py runs on the CPU as a user runs it (small settings, a tiny cache) and its JSON adds up:
the projection is the protocol's arithmetic on the measured times, the sweep is the sum of its networks, and
packed runs report their aggregate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cachefixture import make_cache

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--device", "cpu", "--batches-per-epoch", "1", "--val-batches", "1", "--seconds", "0",
         "--pos-per-au", "1", "--neg-per-au", "1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "c", subjects=5, videos_per_subject=1, frames=30)


def _run(args: list[str], tmp_path: Path) -> tuple[dict, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), *args], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu_and_projects_the_protocol(cache, tmp_path):
    out = tmp_path / "bench.json"
    result, err = _run(["--cache", str(cache), "--arch", "baseline", "--graphs", "off,emulate", *SMALL, "--json",
                        "--json-out", str(out)], tmp_path)
    assert json.loads(out.read_text()) == result
    rows = result["networks"]
    assert [(r["arch"], r["graphs"], r["step"]) for r in rows] == [("baseline", "off", "off"),
                                                                    ("baseline", "emulate", "emulated")]
    p = result["protocol"]
    assert (p["epochs"], p["batches_per_epoch"], p["val_batches"]) == (600, 300, 300)
    for r in rows:
        assert r["batch"] == 2 * 5 and r["epochs_timed"] >= 1 and r["train_images_per_s"] > 0
        assert r["train_images_per_s"] == pytest.approx(r["batch"] / r["train_s_per_batch"], abs=0.06)
        hours = p["epochs"] * (p["batches_per_epoch"] * r["train_s_per_batch"]
                               + p["val_batches"] * r["val_s_per_batch"] + r["epoch_work_s"]) / 3600
        assert r["protocol_hours"] == pytest.approx(hours, rel=1e-2)
    for g in ("off", "emulate"):
        sweep = result["sweep"][g]
        assert sweep["networks"] == 1 and not sweep["complete"]
        assert sweep["hours"] == pytest.approx(sum(r["protocol_hours"] for r in rows if r["graphs"] == g), abs=0.01)
    assert "baseline" in err and "Table I sweep" in err


@pytest.mark.slow
def test_gpu_benchmark_packs_runs_and_keeps_going_past_a_failure(cache, tmp_path):
    result, err = _run(["--cache", str(cache), "--arch", "baseline,nosuchnet", "--graphs", "off", "--pack", "2",
                        *SMALL, "--json"], tmp_path)
    ok, bad = result["networks"]
    assert ok["arch"] == "baseline" and "error" not in ok
    assert bad["arch"] == "nosuchnet" and "nosuchnet" in bad["error"] and "FAILED" in err
    pack = result["packed"][0]
    assert pack["runs_at_once"] == 2 and len(pack["per_run_train_images_per_s"]) == 2 and not pack["errors"]
    assert pack["aggregate_train_images_per_s"] == pytest.approx(sum(pack["per_run_train_images_per_s"]), abs=0.2)


def test_vmap_seeds_benchmark_computes_each_seeds_own_step(tmp_path):
    """benchmarks/vmap_seeds.py (several seeds of one network in one process, issue 23) on the CPU: the vmapped
    step gives each seed the gradient of its own model on its own batch, and both variants are timed."""
    out = tmp_path / "vmap.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vmap_seeds.py"), "--seeds", "2", "--steps", "2",
                           "--rounds", "1", "--json-out", str(out)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert "error" not in result and result["seeds"] == 2 and result["arch"] == "baseline"
    assert result["grad_gap_float64"] < 1e-10  # the same computation: each seed's own gradient
    assert result["grad_gap_as_timed"] < 0.1  # float32: another summation order, max-pool near-ties
    assert result["plain_images_per_s"]["median"] > 0 and result["vmap_images_per_s"]["median"] > 0
    assert result["speedup"] == pytest.approx(result["vmap_images_per_s"]["median"] / result["plain_images_per_s"]["median"])
    assert "relative L2 gap" in done.stdout
