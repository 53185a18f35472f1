#!/usr/bin/env bash
# The adaptive runtime on a GPU: train the stream network of docs/results/runtime.md properly, then time it
# on CUDA.
#
# The CPU figures in docs/results/runtime.md ("Adaptive against static inference") come from a network
# trained 3 epochs on 6,000 images (~79 % accuracy), too weak for the accuracy and MACs
# targets. This job trains the same hand-written genome on the full Fashion-MNIST train
# split (5,000 held out for val, which the thresholds are chosen on) on the GPU, then runs
# aebnas-stream on CUDA: batch 1 (with the three named operating points) and a batch sweep
# on all 10,000 test images. The trained run comes back as one tarball so the CPU benchmark
# can be repeated on the same weights.
#
#   OUT=/tmp/stream_out bash experiments/gpu_stream_job.sh                    # on the GPU machine
#   RUN_FROM=.gpu/fmnist_stream_run OUT=/tmp/stream_out bash experiments/gpu_stream_job.sh
#                                 # no training: time the network trained on the CPU (docs/results/runtime.md)
#   STREAM_SMOKE=1 OUT=/tmp/stream_out bash experiments/gpu_stream_job.sh     # tiny check on a CPU
#
# Run from the repo root with the package importable (PYTHONPATH=$PWD). Knobs (env):
# DATA_DIR (the four Fashion-MNIST idx .gz files), RUN_FROM (a run directory of this genome to
# stream instead of training one), EPOCHS, BATCH, LR, DEVICE, N_BATCH1, FLOOR (val-accuracy floor of
# the extra operating point; default: the final exit's val accuracy less 0.2 points, docs/results/runtime.md).
# Writes 5 files to $OUT: stream_job.log, stream_run.tar.gz (the run directory: config,
# CSVs, models/00_*/ with weights and operating_points.json), stream_gpu.json (every
# aebnas-stream result, keyed by pass), stream_b1.png, stream_batched.png.
set -euo pipefail
export PYTHONUNBUFFERED=1

OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/stream_job.log") 2>&1

GENOME='k3e3-k3e3/k3e3-k3e3-k3e3/k3e4-k3e4-k3e4/k3e4-k3e4-k3e4/k3e4-k3e4-k3e4|t0.9:conv32k3|t0.9:dwsep32k3|off|off'
# The same network with other thresholds: without threshold tuning the two genomes are two candidates of one
# network, so a population of 2 (NSGA-II's minimum) trains this one network only. With tuning on they would be
# one candidate, and NSGA-II would fill the population with a random network, trained for nothing.
GENOME_TWIN=${GENOME//t0.9:/t0.8:}
DATA_DIR=${DATA_DIR:-.gpu/fashion-mnist}
WORK=$(mktemp -d /tmp/aebnas-stream-job.XXXXXX)
RUN="$WORK/stream_run"
START=$SECONDS
FLOOR=${FLOOR:-}  # empty: the final exit's val accuracy less 0.2 points, read from the run before the floor pass

if [[ "${STREAM_SMOKE:-0}" == 1 ]]; then
  # Minutes on a 2-core CPU: proves the commands and the packing, not the figures.
  DEVICE=${DEVICE:-cpu}; EPOCHS=${EPOCHS:-2}; BATCH=${BATCH:-64}; LR=${LR:-0.1}
  N_BATCH1=${N_BATCH1:-100}; N_TEST=200; BATCHES='[64,256]'; BATCHES_POINTS='[64]'
  SIZE_ARGS=(dataset.max_train_samples=2000 dataset.val_size=1000 trainer.num_threads=2)
else
  # Full train split (55,000 after the 5,000 val images); ~40 epochs reach the network's real
  # accuracy; the net is small enough that a GPU step is launch-bound, so a large batch is cheap.
  DEVICE=${DEVICE:-cuda}; EPOCHS=${EPOCHS:-40}; BATCH=${BATCH:-256}; LR=${LR:-0.2}
  N_BATCH1=${N_BATCH1:-2000}; N_TEST=10000; BATCHES='[64,256,1024,4096]'; BATCHES_POINTS='[256,4096]'
  SIZE_ARGS=(dataset.val_size=5000)
fi

# Elapsed seconds since the job started, for the log.
stamp() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - START))s] $*"; }

# What ran where: the figures mean little without the machine and versions.
machine_facts() {
  stamp "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  grep -m1 "model name" /proc/cpuinfo || true
  echo "cpus: $(nproc)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  git rev-parse --short HEAD 2>/dev/null || echo "no git checkout"
}

# Every module the two CLIs import, checked in seconds rather than after training.
preflight() {
  python3 - <<'EOF'
import importlib, sys
need = ["torch", "numpy", "pandas", "matplotlib", "tqdm", "yaml", "omegaconf", "hydra", "pymoo", "aebnas.cli.search",
        "aebnas.cli.stream"]
missing = []
for name in need:
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    sys.exit("missing: " + "; ".join(missing))
print("imports ok")
EOF
  [[ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]] || { echo "no Fashion-MNIST idx files in $DATA_DIR" >&2; exit 2; }
}

# One trained network, through the ordinary search (so the run directory is what aebnas-stream reads).
train_network() {
  stamp "training $GENOME: $EPOCHS epochs, batch $BATCH, lr $LR on $DEVICE"
  python3 -m aebnas.cli.search experiment=fashion_mnist dataset.data_dir="$DATA_DIR" space=stream_cpu \
    search.objective=avg_macs search.exit_metric=max_softmax search.pop_size=2 search.generations=1 \
    "search.initial_genomes=['$GENOME','$GENOME_TWIN']" \
    search.threshold_tuning=false trainer.epochs="$EPOCHS" \
    trainer.init=from_scratch trainer.batch_size="$BATCH" trainer.lr="$LR" trainer.crop_padding=2 trainer.device="$DEVICE" \
    dataset.resolution=28 dataset.pad_to_resolution=false "${SIZE_ARGS[@]}" progress=false \
    hydra.run.dir="$RUN"
  stamp "trained"
}

# One aebnas-stream pass into $WORK/<name>; extra arguments override conf/stream.yaml.
stream_pass() {
  local name=$1; shift
  stamp "stream $name: $*"
  python3 -m aebnas.cli.stream run="$RUN" model=0 device="$DEVICE" progress=false data_dir="$DATA_DIR" \
    hydra.run.dir="$WORK/$name" "$@"
  collect_all  # after every pass: a job stopped at its time limit still returns the passes it finished
}

# Every pass's stream.json in one file (the device returns only a few files).
collect_results() {
  python3 - "$WORK" "$OUT/stream_gpu.json" "$@" <<'EOF'
import json, sys
from pathlib import Path
work, out, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
found = {n: json.loads((work / n / "stream.json").read_text()) for n in names if (work / n / "stream.json").exists()}
out.write_text(json.dumps(found, indent=2))
print(f"wrote {out}: {sorted(found)}")
EOF
}

# What the passes so far wrote: their stream.json in one file, and the two plots.
collect_all() {
  collect_results b1 batched floor points_max_accuracy points_min_energy
  if [[ -f "$WORK/b1/stream.png" ]]; then cp "$WORK/b1/stream.png" "$OUT/stream_b1.png"; fi
  if [[ -f "$WORK/batched/stream.png" ]]; then cp "$WORK/batched/stream.png" "$OUT/stream_batched.png"; fi
}

# The run directory as one tarball; runs on exit too, so a failed stream still brings the weights back.
pack_run() {
  if [[ -d "$RUN" ]]; then
    tar -czf "$OUT/stream_run.tar.gz" -C "$WORK" stream_run
    stamp "packed $(du -h "$OUT/stream_run.tar.gz" | cut -f1) into $OUT/stream_run.tar.gz"
  fi
}
trap pack_run EXIT

machine_facts
preflight
if [[ -n "${RUN_FROM:-}" ]]; then
  cp -r "$RUN_FROM" "$RUN"
  stamp "streaming the trained run $RUN_FROM (no training)"
else
  train_network
fi
# batch 1 (camera-like stream) on the first N_BATCH1 images, with the operating-point table
stream_pass b1 n_images="$N_BATCH1" batch_size=1 operating_point=balanced
# the batched stream on every test image, at several batches (a GPU's throughput depends on it)
stream_pass batched n_images="$N_TEST" "batch_size=$BATCHES" batch_one=false operating_point_table=false \
  operating_point=balanced
# the cheapest point within 0.2 points of the final exit on val (the rule of docs/results/runtime.md), batched
if [[ -z "$FLOOR" ]]; then
  FLOOR=$(python3 -c "import json, pandas; h = json.loads(pandas.read_csv('$RUN/pareto.csv').iloc[0]['head_accuracies']); print(f'{h[-1] - 0.002:.4f}')")
  stamp "floor: the final exit's val accuracy less 0.2 points = $FLOOR"
fi
stream_pass floor n_images="$N_TEST" "batch_size=$BATCHES" batch_one=false operating_point_table=false \
  operating_point=null min_accuracy="$FLOOR"
# throttling on the batched stream: the two other named points
for point in max_accuracy min_energy; do
  stream_pass "points_$point" n_images="$N_TEST" "batch_size=$BATCHES_POINTS" batch_one=false \
    operating_point_table=false operating_point="$point"
done
stamp "done; outputs in $OUT"
