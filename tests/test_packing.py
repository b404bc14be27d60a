"""Several runs per GPU (studies/packing.py): which run goes to which GPU, how many at once, the memory check, the
local launcher's pinned jobs (GPU counts monkeypatched: this machine has none) and the SLURM job shape."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aubench_cli.cli import app
from aubench_cli.errors import UsageError
from aubench_cli.studies import launcher, packing
from aubench_cli.studies.study import STATUS_DIR
from test_launcher import _fake_sbatch, _preset
from cachefixture import make_cache

runner = CliRunner()
GiB = packing.GiB


@pytest.fixture(autouse=True)
def no_jobs_left_over(monkeypatch):
    """Jobs submitted by one test (fake ones, or a SLURM array that never runs) must not be waited on by another."""
    monkeypatch.setattr(launcher, "_JOBS", [])
    monkeypatch.setattr(launcher, "_PACKED", set())


@pytest.fixture()
def small(tmp_path):
    cache = make_cache(tmp_path / "cache", subjects=4, videos_per_subject=1, frames=24)
    return tmp_path, _preset(tmp_path / "duo.yaml"), cache


def test_slots_deal_runs_evenly_to_gpus_n_at_once():
    slots = packing.plan_slots(7, devices=2, per_device=2)
    assert [s.device for s in slots] == [0, 1, 0, 1]  # N slots per GPU, GPUs in turn
    assert [s.runs for s in slots] == [(0, 4), (1, 5), (2, 6), (3,)]
    assert sorted(r for s in slots for r in s.runs) == list(range(7))  # every run exactly once
    few = packing.plan_slots(3, devices=2, per_device=4)  # fewer runs than slots: one slot per run
    assert [(s.device, s.runs) for s in few] == [(0, (0,)), (1, (1,)), (0, (2,))]


def test_memory_check_limits_or_refuses_packing():
    said = []
    assert packing.runs_that_fit(4, 4 * GiB, [100 * GiB, 100 * GiB], said.append) == 4 and said == []
    assert packing.runs_that_fit(4, 4 * GiB, [100 * GiB, 10 * GiB], said.append) == 2  # 0.9 x 10 // 4
    assert len(said) == 1 and "only 2 runs" in said[0] and "cuda:1" in said[0]
    with pytest.raises(UsageError, match="one run needs about 4.0 GiB"):
        packing.runs_that_fit(2, 4 * GiB, [3 * GiB])


def _gpus(monkeypatch, count: int, free: int) -> None:
    monkeypatch.setattr(packing, "visible_gpus", lambda: count)
    monkeypatch.setattr(packing, "free_memory", lambda device: free)


class _FakeExecutor:
    calls: list = []

    def __init__(self):
        self.params: dict = {}

    def update_parameters(self, **kw):
        self.params.update(kw)

    def map_array(self, fn, args):
        first = len(_FakeExecutor.calls) * 100
        _FakeExecutor.calls.append((dict(self.params), type(fn).__name__, args))
        return [type("Job", (), {"job_id": str(first + i), "paths": type("P", (), {"stdout": f"/log/{first + i}"})})()
                for i in range(len(args))]


def test_local_packing_pins_n_jobs_per_gpu(small, monkeypatch):
    root, preset, cache = small
    _gpus(monkeypatch, 2, 80 * GiB)
    _FakeExecutor.calls = []
    monkeypatch.setattr(launcher, "make_executor", lambda out, options: _FakeExecutor())
    out = root / "st"
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(out), "--seeds", "3",
                                 "--launcher", "local", "--runs-per-device", "2", "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["runs_per_device"] == 2
    assert [c[0]["visible_gpus"] for c in _FakeExecutor.calls] == [(0,), (1,)]  # one submission per GPU, pinned
    assert all(c[0]["gpus_per_node"] == 1 and c[1] == "PackedJob" for c in _FakeExecutor.calls)
    jobs_per_gpu = [len(c[2]) for c in _FakeExecutor.calls]
    assert jobs_per_gpu == [2, 2]  # N jobs at once on each GPU
    keys = {c[0]["visible_gpus"][0]: [[s.run + f".seed{s.seed}" for s in chain] for chains in c[2] for chain in chains]
            for c in _FakeExecutor.calls}
    assert keys == {0: [["raw.seed0", "snorm.seed1"], ["raw.seed2"]], 1: [["raw.seed1", "snorm.seed2"], ["snorm.seed0"]]}
    specs = [s for c in _FakeExecutor.calls for chains in c[2] for chain in chains for s in chain]
    assert all(s.packed for s in specs) and len(specs) == 6
    devices = {j["key"]: j["device"] for j in outcome["submitted"]}
    assert devices["raw.seed0"] == "cuda:0" and devices["raw.seed1"] == "cuda:1"
    leases = {p.stem: json.loads(p.read_text())["job"] for p in (out / launcher.LEASE_DIR).glob("*.json")}
    assert leases["raw.seed0"] == leases["snorm.seed1"] != leases["raw.seed2"]  # a chain's runs: one job


def test_packing_needs_a_launcher_a_gpu_and_one_gpu_runs(small, monkeypatch):
    root, preset, cache = small
    base = ["study", str(preset), "--cache", str(cache), "--out", str(root / "st"), "--runs-per-device", "2"]
    no_launcher = runner.invoke(app, base)
    assert no_launcher.exit_code == 2 and "--launcher" in no_launcher.output
    _gpus(monkeypatch, 0, 0)
    no_gpu = runner.invoke(app, base + ["--launcher", "local"])
    assert no_gpu.exit_code == 2 and "no CUDA GPU is visible" in no_gpu.output
    _gpus(monkeypatch, 1, 80 * GiB)
    both = runner.invoke(app, base + ["--launcher", "local", "--gpus-per-run", "2"])
    assert both.exit_code == 2 and "--gpus-per-run" in both.output


def test_slurm_packing_is_jobs_of_one_gpu_and_n_tasks(small, monkeypatch):
    root, preset, cache = small
    log = root / "sbatch.log"
    _fake_sbatch(root / "bin", log)
    monkeypatch.setenv("PATH", f"{root / 'bin'}:{os.environ['PATH']}")
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(root / "st"), "--seeds",
                                 "3", "--launcher", "slurm", "--runs-per-device", "4", "--json"])
    assert result.exit_code == 0, result.output
    script = Path(f"{log}.script").read_text()
    for line in ("#SBATCH --array=0-1%", "#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=4"):
        assert line in script, line
    jobs = [j["job"] for j in json.loads(result.stdout)["submitted"]]
    assert jobs == ["4242_0"] * 4 + ["4242_1"] * 2  # 6 runs: a job of 4 at once, then one of 2


def test_packed_runs_train_at_once_on_the_local_executor(small, monkeypatch):
    """End to end with submitit's LocalExecutor: 2 slots on one (pretend) GPU train their runs at the same time."""
    root, preset, cache = small
    _gpus(monkeypatch, 1, 80 * GiB)
    out = root / "st"
    result = runner.invoke(app, ["study", str(preset), "--cache", str(cache), "--out", str(out), "--launcher",
                                 "local", "--runs-per-device", "2", "--wait", "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert sorted(r["state"] for r in outcome["results"]) == ["done", "done"]
    assert len({j["job"] for j in outcome["submitted"]}) == 2
    spans = []
    for key in ("raw", "snorm"):
        status = json.loads((out / STATUS_DIR / f"{key}.json").read_text())
        spans.append((datetime.fromisoformat(status["started"]), datetime.fromisoformat(status["at"])))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1  # the two runs overlapped in time


def test_a_packed_run_never_joins_ddp(monkeypatch):
    """A SLURM job of one GPU and N tasks runs N separate runs: its tasks must not read as N DDP ranks."""
    import submitit

    from aubench_cli.studies import study as studymod

    env = type("Env", (), {"num_tasks": 2, "global_rank": 1, "local_rank": 1, "num_nodes": 1,
                           "hostnames": ["gpu01"], "job_id": "77_3"})()
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: env)

    class Stop(Exception):
        pass

    def stop(preset):
        raise Stop

    monkeypatch.setattr(studymod, "load_study", stop)
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    for name in names:  # recorded by monkeypatch: whatever the job sets is undone after the test
        monkeypatch.setenv(name, "x")
    for packed, expected in ((True, None), (False, "2")):
        for name in names:
            monkeypatch.delenv(name, raising=False)
        spec = launcher.UnitSpec("p", "/tmp/x", "raw", None, [], None, {}, None, packed=packed)
        with pytest.raises(Stop):
            launcher.StudyJob()(spec)
        assert os.environ.get("WORLD_SIZE") == expected
