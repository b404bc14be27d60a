#!/usr/bin/env bash
# The GPU measurements of docs/performance.md ("CUDA graphs and packing on a GPU"), as one time-boxed run on the
# lent device machine (one call of the device tool, about 8 minutes of wall time). From the project root, after
# ../shared/gpu/prepare.sh filled .gpu/ (carry [".gpu"]):
#     bash benchmarks/gpu_device_run.sh
# Stages, each capped by `timeout` (a failed or cut stage does not stop the others; results so far are kept):
#   a. benchmarks/gpu.py: the 11 networks through the real training step, CUDA graphs on and off   (A_S seconds)
#   b. the baseline's validation curve, CURVE_EPOCHS epochs of the full protocol's length (300 + 300 batches),
#      graphs on (seed 0) beside eager (seeds 0 and 1: the seed noise), three runs at once       (B_S seconds)
#   c. packing: PACK runs at once of the baseline and mobilenetv2 against one alone (graphs on)  (C_S seconds)
#   d. `aubench study --launcher local --runs-per-device 2` on a tiny study: the jobs pinned to the GPU (D_S)
#   e. benchmarks/vmap_seeds.py: E_SEEDS seeds of the baseline and EmoNets in one vmapped step against in turn,
#      the model step alone, eager (E_S seconds each; only with STAGES=...e..., e.g. STAGES=ae A_GRAPHS=on)
# Writes to $OUT (default /tmp/aubench-gpu-out): env.json, gpu_bench.json, curve.json, pack.json,
# study_pack.json, vmap_<arch>.json and device_run.log (everything printed). Every setting below can be overridden from the
# environment, e.g. CURVE_EPOCHS=20 A_S=150 bash benchmarks/gpu_device_run.sh; STAGES=a A_GRAPHS=on A_S=150 runs
# the Table I sweep with graphs alone (what docs/performance.md still lacks after the background checkpoints).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aubench-gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device_run.log") 2>&1
CACHE=${CACHE:-.gpu/cache}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu with tiny settings checks the script's plumbing off the GPU
A_ARCH=${A_ARCH:-all}; C_ARCH=${C_ARCH:-baseline,mobilenetv2}
CURVE_BATCHES=${CURVE_BATCHES:-300}; CURVE_VAL=${CURVE_VAL:-300}; C_SECONDS=${C_SECONDS:-5}; C_BATCHES=${C_BATCHES:-50}
FOLD=${FOLD:-"--folds 5 --fold 0"}  # the prepared cache's own val split is empty: train on a fold
PY=${PY:-python3}
A_S=${A_S:-185}; A_SECONDS=${A_SECONDS:-3}; A_BATCHES=${A_BATCHES:-30}; A_GRAPHS=${A_GRAPHS:-on,off}
STAGES=${STAGES:-abcd}  # which stages to run, e.g. STAGES=a A_GRAPHS=on: the sweep with graphs only (about 2 min)
B_S=${B_S:-140}; CURVE_EPOCHS=${CURVE_EPOCHS:-40}
C_S=${C_S:-90}; PACK=${PACK:-4}
D_S=${D_S:-45}
E_S=${E_S:-40}; E_SEEDS=${E_SEEDS:-4}; E_STEPS=${E_STEPS:-30}  # stage e (not in the default STAGES: STAGES=e)
WORK=${WORK:-/tmp/aubench-gpu-work}
rm -rf "$WORK"; mkdir -p "$WORK"
stamp() { echo "[$(date -u +%T)] $*"; }

stamp "set-up"
[ -f .gpu/env.sh ] && source .gpu/env.sh
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null || true
"$PY" - "$OUT/env.json" <<'PY' || true
import json, sys, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpus": torch.cuda.device_count()}
try:
    free, total = torch.cuda.mem_get_info(0)
    info.update(gpu_free_gib=round(free / 2**30, 1), gpu_total_gib=round(total / 2**30, 1))
except Exception as exc:  # noqa: BLE001
    info["error"] = str(exc)
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(info)
PY

if [[ $STAGES == *a* ]]; then
stamp "a. gpu benchmark: 11 networks, graphs on and off (cap ${A_S} s)"
timeout -k 10 "$A_S" "$PY" benchmarks/gpu.py --cache "$CACHE" --device "$DEVICE" $FOLD --arch "$A_ARCH" --graphs "$A_GRAPHS" \
  --seconds "$A_SECONDS" --batches-per-epoch "$A_BATCHES" --val-batches "$A_BATCHES" --budget $((A_S - 30)) \
  --json-out "$OUT/gpu_bench.json" > /dev/null
stamp "a. done (exit $?)"
fi

if [[ $STAGES == *b* ]]; then
stamp "b. baseline validation curve, ${CURVE_EPOCHS} epochs: graphs on vs eager, three runs at once (cap ${B_S} s)"
curve() {  # name graphs seed
  timeout -k 10 "$B_S" "$PY" -m aubench_cli train --cache "$CACHE" --device "$DEVICE" $FOLD --arch baseline \
    --epochs "$CURVE_EPOCHS" --batches-per-epoch "$CURVE_BATCHES" --val-batches "$CURVE_VAL" --cuda-graphs "$2" --seed "$3" --out "$WORK/curve-$1" > "$WORK/curve-$1.log" 2>&1
  echo "curve $1 exit $?"; grep -m3 -i "graphs\|error" "$WORK/curve-$1.log" || true
}
curve graphs on 0 & p1=$!; curve eager off 0 & p2=$!; curve eager-seed1 off 1 & p3=$!
wait "$p1" "$p2" "$p3"  # (a bare `wait` would also wait for the log's tee)
"$PY" - "$WORK" "$OUT/curve.json" <<'PY' || true
import csv, json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), sys.argv[2]
runs = {}
for name in ("graphs", "eager", "eager-seed1"):
    path = work / f"curve-{name}" / "metrics.csv"
    rows = list(csv.DictReader(open(path))) if path.is_file() else []
    record = {}
    try:
        record = json.loads((work / f"curve-{name}" / "data.json").read_text())
    except Exception:  # noqa: BLE001
        pass
    runs[name] = {"cuda_graphs": record.get("cuda_graphs"), "epochs": len(rows),
                  "val_mean": [float(r["val_mean"]) for r in rows], "train_loss": [float(r["train_loss"]) for r in rows],
                  "seconds": [float(r["seconds"]) for r in rows], "images_per_s": [float(r["images_per_s"]) for r in rows]}
def gap(a, b):
    n = min(len(a), len(b))
    return round(sum(abs(x - y) for x, y in zip(a[:n], b[:n])) / n, 5) if n else None
summary = {"graphs_vs_eager_mean_abs_val_gap": gap(runs["graphs"]["val_mean"], runs["eager"]["val_mean"]),
           "seed_noise_mean_abs_val_gap": gap(runs["eager"]["val_mean"], runs["eager-seed1"]["val_mean"]),
           "best_val_mean": {k: max(v["val_mean"], default=None) for k, v in runs.items()},
           "last5_val_mean": {k: (sum(v["val_mean"][-5:]) / len(v["val_mean"][-5:]) if v["val_mean"] else None) for k, v in runs.items()},
           "note": "three runs at once on one GPU: the per-epoch seconds are not the single-run pace (see gpu_bench.json)"}
json.dump({"summary": summary, "runs": runs}, open(out, "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
stamp "b. done"
fi

if [[ $STAGES == *c* ]]; then
stamp "c. packing: ${PACK} runs at once vs one, baseline and mobilenetv2, graphs on (cap ${C_S} s)"
timeout -k 10 "$C_S" "$PY" benchmarks/gpu.py --cache "$CACHE" --device "$DEVICE" $FOLD --arch "$C_ARCH" \
  --graphs on --pack "$PACK" --seconds "$C_SECONDS" --batches-per-epoch "$C_BATCHES" --val-batches "$C_BATCHES" --budget $((C_S - 20)) \
  --json-out "$OUT/pack.json" > /dev/null
stamp "c. done (exit $?)"
fi

if [[ $STAGES == *d* ]]; then
stamp "d. aubench study --launcher local --runs-per-device 2 (cap ${D_S} s)"
cat > "$WORK/pack-study.yaml" <<'Y'
name: pack-smoke
study: {title: "packing smoke test", kind: table}
train: {epochs: 1, batches_per_epoch: 20, val_batches: 5}
eval: {batches: 20}
runs:
  - {name: baseline, set: {model.arch: baseline}}
Y
timeout -k 10 "$D_S" "$PY" -m aubench_cli study "$WORK/pack-study.yaml" --cache "$CACHE" --out "$WORK/study" \
  --folds 2 --launcher local --runs-per-device 2 --wait --json > "$WORK/study.json"
echo "study exit $?"
"$PY" - "$WORK" "$OUT/study_pack.json" <<'PY' || true
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
try:
    outcome = json.loads((work / "study.json").read_text())
except Exception as exc:  # noqa: BLE001
    outcome = {"error": f"no study output: {exc}"}
runs = {}
for data in sorted((work / "study").glob("**/data.json")):
    record = json.loads(data.read_text())
    status = {}
    runs[str(data.parent.relative_to(work / "study"))] = {"device": record.get("device"), "cuda_graphs": record.get("cuda_graphs")}
for st in sorted((work / "study" / "status").glob("*.json")):
    s = json.loads(st.read_text())
    runs.setdefault(st.stem, {}).update(started=s.get("started"), at=s.get("at"), state=s.get("state"))
json.dump({"outcome": outcome, "runs": runs}, open(sys.argv[2], "w"), indent=2)
print(json.dumps(runs, indent=2))
PY
stamp "d. done"
fi

if [[ $STAGES == *e* ]]; then
stamp "e. several seeds in one process (vmap) vs in turn: ${E_SEEDS} seeds of the baseline and EmoNets (cap ${E_S} s)"
for arch in baseline emonets; do
  timeout -k 10 "$E_S" "$PY" benchmarks/vmap_seeds.py --device "$DEVICE" --arch "$arch" --seeds "$E_SEEDS" \
    --steps "$E_STEPS" --rounds 3 --json-out "$OUT/vmap_$arch.json"
  echo "vmap $arch exit $?"
done
stamp "e. done"
fi

ls -la "$OUT"
