"""Studies on a cluster: each pending unit of a study (a run, on one fold, at one seed) is one job of a submitit
job array.

submitit does the scheduling: ``SlurmExecutor`` writes the sbatch script and submits one array for the study,
``LocalExecutor`` runs the same jobs as processes on this machine (how it is tested here). The study directory
stays the single source of truth: a job trains and evaluates its unit exactly as ``aubench study`` does in
process (``run_unit``), so a rerun or resubmission skips finished units and resumes interrupted ones from
``last.pt``.

Leases. Before a unit is submitted, ``DIR/leases/<unit>.json`` is created exclusively (``O_EXCL``) and then names
the job; a job trains only a unit whose lease names it, and removes the lease when it ends. A resubmission skips
units whose lease is held by a job that may still be pending or running, so two jobs never train one run
directory; a lease whose job is known to be gone (its process is dead on this machine, or ``squeue`` no longer
lists it) is stale and taken over.

Time limits. One ``--time`` cannot fit runs whose cost differs 70-fold, so jobs are checkpointable: when SLURM
signals the end of the allocation, submitit calls ``StudyJob.checkpoint`` and requeues the job, which continues
from the run's ``last.pt`` (resume is exact). Several GPUs per run: submitit starts one task per GPU with srun, and
``ddp_environment`` maps ``submitit.JobEnvironment`` onto what the trainer reads (RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

Several runs per GPU (``--runs-per-device N``, ``packing.py``): the local launcher submits N jobs per visible GPU,
each pinned to its GPU and training its share of the runs in turn (``PackedJob``); the SLURM launcher submits
jobs of one GPU and N tasks, each task one run. A packed job's runs never take part in DDP.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aubench_cli.data.cache import pid_alive
from aubench_cli.errors import UsageError
from aubench_cli.fileio import atomic_write_text
from aubench_cli.studies import packing
from aubench_cli.studies import study as studymod

LEASE_DIR = "leases"
LOG_DIR = "logs"
LAUNCHERS = ("local", "slurm")
# requeues allowed after a time limit: each continues from last.pt, so a long run may take many allocations
MAX_REQUEUES = 100


@dataclass
class LaunchOptions:
    launcher: str = "local"
    partition: str | None = None
    time_min: int = 60
    gpus_per_run: int = 0
    cpus_per_run: int | None = None
    array_parallelism: int = 256
    slurm: dict[str, str] = field(default_factory=dict)  # any other sbatch parameter, --slurm key=value
    runs_per_device: int = 0  # 0: one run per job (and per GPU); N: N runs at once on each GPU (packing.py)


def parse_slurm_items(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm expects KEY=VALUE, got {item!r}", "e.g. --slurm account=myproj --slurm qos=high")
        out[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return out


# ----------------------------------------------------------------------------------------------------------------
# the job


@dataclass
class UnitSpec:
    """What a job needs to rebuild its unit in a fresh process (picklable, small)."""

    preset: str
    out: str
    run: str
    seed: int | None
    sets: list[str]
    cache: str | None
    weights: dict[str, str]
    seeds: int | None
    fold: int | None = None
    folds: int | None = None
    fold_file: str | None = None
    assignment: int | None = None  # --fold-seeds: the folds dealt with fold seed + assignment
    packed: bool = False  # one of several runs sharing a GPU: never DDP, whatever the job's task count


def ddp_environment(env: Any, job_id: str) -> dict[str, str]:
    """The variables the trainer reads for DDP, from a ``submitit.JobEnvironment`` (empty for one task)."""
    if env.num_tasks <= 1:
        return {}
    digits = "".join(ch for ch in str(job_id) if ch.isdigit()) or "0"
    return {
        "RANK": str(env.global_rank),
        "LOCAL_RANK": str(env.local_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_WORLD_SIZE": str(max(1, env.num_tasks // max(1, env.num_nodes))),
        "MASTER_ADDR": str(env.hostnames[0]),
        "MASTER_PORT": str(20000 + int(digits[-6:]) % 20000),  # the same on every task of the job, differs by job
    }


def _job_id() -> str:
    import submitit

    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job (tests calling the job directly)
        return f"pid{os.getpid()}"


class StudyJob:
    """The callable each job runs: one unit, through ``run_unit``; checkpointable (requeued at a time limit)."""

    def __call__(self, spec: UnitSpec) -> dict[str, Any]:
        import submitit

        job_id = _job_id()
        try:
            env = submitit.JobEnvironment()
            if not spec.packed:
                os.environ.update(ddp_environment(env, job_id))
        except RuntimeError:
            pass
        study = studymod.load_study(spec.preset)
        unit = studymod.Unit(study.run(spec.run), spec.seed, spec.fold, spec.assignment)
        out = Path(spec.out)
        main = studymod._main_process()
        if main and not claim_lease(out, unit.key, job_id):
            holder = read_lease(out, unit.key) or {}
            return {"name": unit.run.name, "seed": unit.seed, "key": unit.key, "state": "skipped",
                    "error": f"lease held by job {holder.get('job')}", "trained": False, "evaluated": False,
                    "mean_accuracy": None}
        # The lease is released when the unit ends (done or failed), not when the job is stopped by a time limit
        # or a cancel (SystemExit, KeyboardInterrupt): then a requeued job of the same id continues, and until
        # the job is known to be gone no resubmission starts a second one.
        try:
            cfg = studymod.unit_configs(study, [unit], spec.sets, spec.cache, spec.weights, spec.folds,
                                        spec.fold_file)[unit.key]
            result = studymod.run_unit(unit, cfg, out, log=lambda m: print(m, flush=True))
        except Exception:
            if main:
                release_lease(out, unit.key, job_id)
            raise
        if main:
            release_lease(out, unit.key, job_id)
        return result

    def checkpoint(self, spec: UnitSpec) -> Any:
        """Called by submitit at a time limit or preemption: requeue the same unit; it resumes from last.pt."""
        import submitit

        return submitit.helpers.DelayedSubmission(StudyJob(), spec)


class PackedJob:
    """A job that shares its GPU with others: ``chains[r]`` are the runs its task r trains, one after another
    (local: one task, pinned to its GPU by CUDA_VISIBLE_DEVICES; SLURM: N tasks on the job's one GPU)."""

    def __call__(self, chains: list[list[UnitSpec]]) -> list[dict[str, Any]]:
        import submitit

        try:
            rank = submitit.JobEnvironment().local_rank
        except RuntimeError:  # called directly (tests)
            rank = 0
        return [StudyJob()(spec) for spec in (chains[rank] if rank < len(chains) else [])]

    def checkpoint(self, chains: list[list[UnitSpec]]) -> Any:
        """Requeued at a time limit: finished runs are skipped, the interrupted one resumes from last.pt."""
        import submitit

        return submitit.helpers.DelayedSubmission(PackedJob(), chains)


# ----------------------------------------------------------------------------------------------------------------
# leases


def _lease_path(out: Path, key: str) -> Path:
    return out / LEASE_DIR / f"{key}.json"


def read_lease(out: Path, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(_lease_path(out, key).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def lease_alive(lease: dict[str, Any]) -> bool:
    """May the lease's job still be pending or running? False only when we know it is gone."""
    if lease.get("launcher") == "local" or lease.get("pid"):
        if lease.get("host") != socket.gethostname():
            return True  # another machine's process: cannot tell, so assume it lives
        pid = lease.get("pid") or (int(lease["job"]) if str(lease.get("job", "")).isdigit() else None)
        return pid is None or pid_alive(int(pid))
    if lease.get("launcher") == "slurm" and lease.get("job") and shutil.which("squeue"):
        try:
            out = subprocess.run(["squeue", "-h", "-j", str(lease["job"]).split("_")[0]], capture_output=True,
                                 text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return True
        return out.returncode != 0 or bool(out.stdout.strip())
    return True


def take_lease(out: Path, key: str, launcher: str) -> bool:
    """Create the unit's lease exclusively before submitting it; False when a live job holds it."""
    path = _lease_path(out, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            lease = read_lease(out, key)
            if lease is not None and lease_alive(lease):
                return False
            stale = path.with_name(f".{path.name}.{os.getpid()}.stale")
            try:
                os.replace(path, stale)  # one rename: of two submitters taking over, only one moves it
                stale.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"job": None, "launcher": launcher, "host": socket.gethostname(),
                       "submitted": studymod._now()}, fh)
        return True
    return False


def name_lease(out: Path, key: str, job: str, launcher: str) -> None:
    lease = read_lease(out, key) or {}
    lease.update(job=str(job), launcher=launcher)
    if launcher == "local":
        lease["pid"] = int(job) if str(job).isdigit() else None
    atomic_write_text(_lease_path(out, key), json.dumps(lease))


def claim_lease(out: Path, key: str, job: str) -> bool:
    """At the start of a job: train only a unit whose lease names this job (or that has none)."""
    lease = read_lease(out, key)
    if lease is not None and lease.get("job") not in (None, str(job)) and lease_alive(lease):
        return False
    record = {**(lease or {}), "job": str(job), "host": socket.gethostname(), "started": studymod._now()}
    if (lease or {}).get("launcher") == "local":
        record["pid"] = record.get("pid") or os.getpid()
    _lease_path(out, key).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_lease_path(out, key), json.dumps(record))
    return True


def release_lease(out: Path, key: str, job: str) -> None:
    lease = read_lease(out, key)
    if lease is not None and lease.get("job") == str(job):
        _lease_path(out, key).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# submitting


def make_executor(out: Path, options: LaunchOptions) -> Any:
    import submitit

    folder = out / LOG_DIR / "%j"
    if options.launcher == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        executor.update_parameters(timeout_min=options.time_min, gpus_per_node=options.gpus_per_run,
                                   tasks_per_node=max(1, options.gpus_per_run))
        return executor
    if options.launcher != "slurm":
        raise UsageError(f"unknown launcher {options.launcher!r}", "use --launcher local or --launcher slurm")
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise UsageError(f"--launcher slurm: no {' or '.join(missing)} on PATH",
                         "run it on a SLURM login node, or use --launcher local")
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    params: dict[str, Any] = {
        "job_name": f"aubench-{out.name}",
        "time": int(options.time_min),
        "array_parallelism": int(options.array_parallelism),
        "nodes": 1,
        "ntasks_per_node": max(1, options.gpus_per_run),  # one task per GPU: DDP across them
        "signal_delay_s": 120,  # time for the checkpoint + requeue before the allocation ends
    }
    if options.gpus_per_run:
        params["gpus_per_node"] = int(options.gpus_per_run)
    if options.partition:
        params["partition"] = options.partition
    if options.cpus_per_run:
        params["cpus_per_task"] = max(1, options.cpus_per_run // max(1, options.gpus_per_run))
    known = set(executor._valid_parameters())  # noqa: SLF001 - submitit's own list of sbatch parameters
    extra = {k: v for k, v in options.slurm.items() if k not in known}
    params.update({k: v for k, v in options.slurm.items() if k in known})
    if extra:
        params["additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def submit(study: studymod.Study, out: Path, units: list[studymod.Unit], *, preset: str, sets: list[str],
           cache: str | None, weights: dict[str, str], seeds: int | None, options: LaunchOptions,
           log: Any = lambda msg: None, folds: int | None = None, fold_file: str | None = None,
           fold_seeds: int | None = None) -> dict[str, Any]:
    """Submit every unit that is not done and not leased to a live job, as one array; returns what was done."""
    folds, fold_file = studymod.recorded_folds(out, *studymod.resolve_folds(folds, fold_file))
    fold_seeds = studymod.recorded_fold_seeds(out, fold_seeds)
    studymod.check_fold_seeds(fold_seeds, folds, fold_file)
    cfgs = studymod.unit_configs(study, units, sets, cache, weights, folds, fold_file)
    studymod.check_caches(cfgs)
    studymod.check_folds(cfgs)
    for unit in units:
        problem = studymod.weights_problem(cfgs[unit.key])
        if problem:
            raise UsageError(problem, f"give it with --weights {unit.run.name}=FILE, or leave it out with --only")
    studymod.write_study_file(study, out, sets, cache, seeds, folds, fold_file, fold_seeds)
    for unit in units:  # before states are read: a run trained before --seeds is seed 0
        studymod.adopt_unseeded(out, unit, log)
    done, held, pending = [], [], []
    for unit in units:
        run_dir = unit.dir(out)
        state = studymod.run_state(run_dir, cfgs[unit.key]) if run_dir.is_dir() else "new"
        if state == "done":
            done.append(unit.key)
        elif take_lease(out, unit.key, options.launcher):
            pending.append(unit)
        else:
            held.append({"key": unit.key, "job": (read_lease(out, unit.key) or {}).get("job")})
    jobs: list[dict[str, Any]] = []
    packed_per_device = None
    if pending and options.runs_per_device:
        specs = [UnitSpec(preset, str(out.resolve()), u.run.name, u.seed, list(sets), cache, dict(weights), seeds,
                          u.fold, folds, fold_file, u.assignment, packed=True) for u in pending]
        caches = sorted({cfgs[u.key].data.cache for u in pending})
        try:
            jobs, packed_per_device = _submit_packed(out, pending, specs, options, caches, log)
        except Exception:  # the leases no job was named in go (a refused plan submits nothing)
            for unit in pending:
                if (read_lease(out, unit.key) or {}).get("job") is None:
                    _lease_path(out, unit.key).unlink(missing_ok=True)
            raise
    elif pending:
        executor = make_executor(out, options)
        specs = [UnitSpec(preset, str(out.resolve()), u.run.name, u.seed, list(sets), cache, dict(weights), seeds,
                          u.fold, folds, fold_file, u.assignment) for u in pending]
        try:
            submitted = executor.map_array(StudyJob(), specs)
        except Exception:
            for unit in pending:
                _lease_path(out, unit.key).unlink(missing_ok=True)
            raise
        for unit, job in zip(pending, submitted):
            name_lease(out, unit.key, job.job_id, options.launcher)
            jobs.append({"key": unit.key, "job": job.job_id, "log": str(Path(str(job.paths.stdout)))})
        _JOBS.extend(submitted)
    outcome = {"launcher": options.launcher, "submitted": jobs, "done": done, "held": held,
               "logs": str((out / LOG_DIR).resolve())}
    if packed_per_device is not None:
        outcome["runs_per_device"] = packed_per_device
    return outcome


def _submit_packed(out: Path, pending: list[studymod.Unit], specs: list[UnitSpec], options: LaunchOptions,
                   caches: list[str], log: Any) -> tuple[list[dict[str, Any]], int]:
    """Submit the pending runs N at a time per GPU (``packing.py``); one entry per run, naming its job (and its
    GPU, locally)."""
    n = options.runs_per_device
    if options.gpus_per_run > 1:
        raise UsageError(f"--runs-per-device {n} packs one-GPU runs and --gpus-per-run is {options.gpus_per_run}",
                         "use one of them: several runs per GPU, or several GPUs per run")
    calls: list[tuple[dict[str, Any], list[list[list[int]]], int | None]] = []  # (parameters, jobs' chains, GPU)
    if options.launcher == "local":
        slots = packing.local_plan(len(pending), n, caches, log)
        per_device = max(sum(1 for t in slots if t.device == s.device) for s in slots)
        for device in sorted({slot.device for slot in slots}):
            chains = [[list(slot.runs)] for slot in slots if slot.device == device]  # a job: one task, one chain
            calls.append(({"gpus_per_node": 1, "visible_gpus": (device,), "tasks_per_node": 1}, chains, device))
    else:
        log(f"--runs-per-device {n}: each job is one GPU training {n} runs at once (their GPU memory is not checked "
            "here: the GPUs are on the compute nodes)")
        per_device = n
        groups = [list(range(k, min(k + n, len(pending)))) for k in range(0, len(pending), n)]
        calls.append(({"gpus_per_node": 1, "ntasks_per_node": n}, [[[i] for i in g] for g in groups], None))
    jobs: list[dict[str, Any]] = []
    for params, job_chains, device in calls:
        executor = make_executor(out, options)
        executor.update_parameters(**params)
        try:
            submitted = executor.map_array(PackedJob(), [[[specs[i] for i in chain] for chain in chains]
                                                          for chains in job_chains])
        except Exception:
            for chains in job_chains:
                for chain in chains:
                    for i in chain:
                        _lease_path(out, pending[i].key).unlink(missing_ok=True)
            raise
        for chains, job in zip(job_chains, submitted):
            for chain in chains:
                for i in chain:
                    name_lease(out, pending[i].key, job.job_id, options.launcher)
                    entry = {"key": pending[i].key, "job": job.job_id, "log": str(Path(str(job.paths.stdout)))}
                    if device is not None:
                        entry["device"] = f"cuda:{device}"
                    jobs.append(entry)
        _PACKED.update(job.job_id for job in submitted)
        _JOBS.extend(submitted)
    return jobs, per_device


_JOBS: list[Any] = []  # the submitit Job objects of this process, for --wait
_PACKED: set[str] = set()  # ids of those that are PackedJobs (a list of results per task)


def wait_all() -> list[dict[str, Any]]:
    """Block until this process's submitted jobs end; their results (a failed job: its error)."""
    results = []
    for job in list(_JOBS):
        try:
            if job.job_id in _PACKED:
                results.extend(r for task in job.results() for r in (task or []))
                continue
            results.append(job.result())
        except Exception as exc:  # noqa: BLE001 - one failed job must not hide the others
            results.append({"key": None, "state": "failed", "error": f"job {job.job_id}: {exc}"})
    _JOBS.clear()
    return results


def status(study: studymod.Study, out: Path, units: list[studymod.Unit], cfgs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each unit's state in the study directory and the job that holds it, if any."""
    rows = []
    for unit in units:
        run_dir = studymod.unit_run_dir(out, unit)
        state = studymod.run_state(run_dir, cfgs[unit.key]) if run_dir.is_dir() else "new"
        recorded = {}
        path = out / studymod.STATUS_DIR / f"{unit.key}.json"
        if path.is_file():
            try:
                recorded = json.loads(path.read_text())
            except json.JSONDecodeError:
                recorded = {}
        if state != "done" and recorded.get("state") == "failed":
            state = "failed"
        lease = read_lease(out, unit.key)
        job = None
        if lease is not None:
            alive = lease_alive(lease)
            job = {"id": lease.get("job"), "launcher": lease.get("launcher"),
                   "state": ("running" if lease.get("started") else "pending") if alive else "gone (stale lease)"}
        rows.append({"key": unit.key, "name": unit.run.name, "seed": unit.seed, "fold": unit.fold,
                     "assignment": unit.assignment, "state": state,
                     "job": job, "error": recorded.get("error") if state == "failed" else None,
                     "run_dir": str(run_dir)})
    return rows
