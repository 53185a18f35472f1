#!/usr/bin/env bash
# The GPU figures still open (docs/benchmarks.md, "Not measured yet"), in stages that fit a lent GPU's
# limits: 10 minutes a command, 30 minutes of device time a session, at most 8 files back from $OUT.
#
#   STAGE=probe  OUT=$OUT bash experiments/gpu_session.sh   # one call, at most 9.5 minutes
#   STAGE=search OUT=$OUT bash experiments/gpu_session.sh   # call again until it says "finished"
#   STAGE=ranking OUT=$OUT bash experiments/gpu_session.sh  # likewise
#   STAGE=methods OUT=$OUT bash experiments/gpu_session.sh  # likewise
#
# probe: what a training step costs (bench_train_step.py, cuDNN on and off); four candidates of the
#   supernet path with trainer.cudnn=false (the first-epoch cost of a new candidate was 27-36 s with
#   cuDNN on an H100); the #6 stream benchmark on the network trained on the CPU; H100 latency tables
#   (#5). Each step has its own time limit, so one slow step cannot take the others' results with it.
# search / ranking: jobs longer than one command. The first call starts the job in its own process
#   session (it outlives the command while the machine stays held) and every call, the first too, waits
#   up to WAIT seconds and sends back what the job has written so far. Call again within the machine's
#   warm time (30 s), or the machine and the job are gone. The job's state lives in /tmp/aebnas-gpu-jobs/<stage>/.
#   search: experiment=fashion_mnist_gpu (40 x 9 = 360 candidates of the supernet path), the whole
#   search timed by the clock, supernet training included (#3's <= 30 min target).
#   ranking: bench_ranking.py, 20 genomes, supernet path vs 15 epochs from scratch (#3's Kendall tau).
#   methods: #7's comparison, experiment=methods_fashion_mnist_gpu (6 methods x 3 seeds, from scratch),
#   then aebnas-report on the sweep; the report's tables and figure come back.
#
# Run from the repo root with the package importable: the device call's command starts with the
# prefix that ../shared/gpu/prepare.sh prints (it installs pymoo and hydra-core into /tmp/site).
# Knobs (env): DATA_DIR (Fashion-MNIST idx .gz files, default .gpu/fashion-mnist), CUDNN (trainer.cudnn of
# search and ranking, default false), WORKERS (candidates at once, default 4), SUPERNET_EPOCHS (default 10:
# 237.7 s on an H100 in the third session), WAIT (seconds a search/ranking call waits, default 540),
# EXTRA (more Hydra overrides for search and ranking, space-separated).
# STAGE=smoke runs every stage's commands at toy sizes on a CPU in a few minutes: a check of the script,
# not of any figure.
set -uo pipefail
export PYTHONUNBUFFERED=1

STAGE=${STAGE:?set STAGE to probe, search, ranking, methods or smoke}
OUT=${OUT:?set OUT to the output folder}
DATA_DIR=$(realpath "${DATA_DIR:-.gpu/fashion-mnist}")
CUDNN=${CUDNN:-false}
WORKERS=${WORKERS:-4}
SUPERNET_EPOCHS=${SUPERNET_EPOCHS:-10}
WAIT=${WAIT:-540}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
ROOT=$(pwd)
# Not under .gpu/: a device call replaces the carried .gpu/ with this machine's copy, which would pull the
# state of a running job from under it. /tmp lasts as long as the machine is held.
JOBS=${JOBS:-/tmp/aebnas-gpu-jobs}
mkdir -p "$OUT" "$JOBS"
START=$SECONDS

stamp() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - START))s] $*"; }

# Runs "$@" under a time limit of $1 seconds; a step that fails or times out is logged, not fatal.
step() {
  local limit=$1; shift
  stamp "step (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  stamp "step rc=$rc$([[ $rc == 124 || $rc == 137 ]] && echo ' (time limit)')"
}

machine_facts() {
  stamp "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  grep -m1 "model name" /proc/cpuinfo || true
  echo "cpus: $(nproc)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn',
torch.backends.cudnn.version(), 'available', torch.cuda.is_available())"
  git rev-parse --short HEAD 2>/dev/null || echo "no git checkout"
  python3 -c "import pymoo, hydra, aebnas" || { echo "pymoo/hydra/aebnas not importable: start the command with the prefix of ../shared/gpu/prepare.sh" >&2; exit 2; }
  [[ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]] || { echo "no Fashion-MNIST idx files in $DATA_DIR" >&2; exit 2; }
}

# The Hydra overrides every search/ranking job shares.
job_overrides() {
  echo "$GPU_EXPERIMENT dataset.data_dir=$DATA_DIR trainer.cudnn=$CUDNN supernet.epochs=$SUPERNET_EPOCHS" \
       "supernet.cache_dir=$JOBS/supernet_cache ${SIZE_OVERRIDES:-} ${EXTRA_ARGS[*]}"
}

probe() {
  local w=$OUT/probe
  mkdir -p "$w"
  exec > >(tee -a "$OUT/probe.log") 2>&1
  machine_facts
  if [[ -z "${SKIP_TRAIN_STEP:-}" ]]; then
    step "${LIMIT_TRAIN_STEP:-110}" python3 experiments/bench_train_step.py --out "$w/train_step.json" \
      $GPU_EXPERIMENT dataset.data_dir="$DATA_DIR" ${SIZE_OVERRIDES:-}
  fi
  # The supernet's quality does not change a candidate's time: one epoch is enough to time candidates.
  step "${LIMIT_CANDIDATES:-150}" python3 experiments/bench_search_speed.py --out "$w/candidates_cudnn_off.json" \
    --candidates "${PROBE_CANDIDATES:-4}" --cache-dir "$JOBS/probe_cache" $GPU_EXPERIMENT \
    dataset.data_dir="$DATA_DIR" supernet.epochs=1 trainer.cudnn=false ${SIZE_OVERRIDES:-}
  if [[ -d "${STREAM_RUN:-.gpu/fmnist_stream_run}" ]]; then
    RUN_FROM=${STREAM_RUN:-.gpu/fmnist_stream_run} OUT=$w/stream DATA_DIR=$DATA_DIR \
      step "${LIMIT_STREAM:-140}" bash experiments/gpu_stream_job.sh
    rm -f "$w/stream/stream_run.tar.gz"  # the weights came from this repo's .gpu/ in the first place
  else
    stamp "no trained stream network in ${STREAM_RUN:-.gpu/fmnist_stream_run}: stream step skipped"
  fi
  for hw in $PROFILE_HARDWARE; do
    step "${LIMIT_PROFILE:-70}" python3 -m aebnas.cli.profile hardware="$hw" space=mbv3_32 profile.resolution=32 \
      profile.channels=3 profile.num_classes=10 profile.validate=true progress=false \
      hydra.run.dir="$w/profile_$hw" ${PROFILE_OVERRIDES:-}
    cp -r "${TABLES:-conf/hardware/tables/$hw}" "$w/profile_$hw/table" 2>/dev/null || true
  done
  tar -czf "$OUT/probe.tar.gz" -C "$OUT" probe && rm -rf "$w"
  stamp "probe done: probe.log and probe.tar.gz"
}

# Starts `$@` once as job $1 in its own process session; later calls find it running or finished.
start_job() {
  local name=$1; shift
  local dir=$JOBS/$name
  if [[ -f "$dir/pid" ]]; then return; fi
  mkdir -p "$dir"
  date -u +%s > "$dir/start"
  setsid bash -c 'cd "$1"; shift; dir=$1; shift; "$@" > "$dir/job.log" 2>&1; echo $? > "$dir/rc"; date -u +%s > "$dir/end"' \
    _ "$ROOT" "$dir" "$@" < /dev/null &
  echo $! > "$dir/pid"
  stamp "started job $name (pid $(cat "$dir/pid")): $*"
}

# Waits up to WAIT seconds for job $1, then copies its log and the files named after it to $OUT.
wait_job() {
  local name=$1; shift
  local dir=$JOBS/$name
  local deadline=$((SECONDS + WAIT))
  while [[ ! -f "$dir/rc" && $SECONDS -lt $deadline ]]; do sleep 5; done
  cp "$dir/job.log" "$OUT/$name.log"
  local f
  for f in "$@"; do [[ -e "$f" ]] && cp -r "$f" "$OUT/"; done
  if [[ -f "$dir/rc" ]]; then
    stamp "job $name finished: rc=$(cat "$dir/rc"), $(( $(cat "$dir/end") - $(cat "$dir/start") )) s by the clock"
  else
    stamp "job $name still running after $(( $(date -u +%s) - $(cat "$dir/start") )) s: call again within 30 s"
  fi
  tail -n 15 "$OUT/$name.log"
}

search() {
  local run=$JOBS/search/run
  start_job search python3 -m aebnas.cli.search $(job_overrides) workers="$WORKERS" progress=false \
    hydra.run.dir="$run"
  wait_job search "$run/summary.json" "$run/generations.csv" "$run/pareto.csv"
}

ranking() {
  start_job ranking python3 experiments/bench_ranking.py --out "$JOBS/ranking/ranking.json" \
    --genomes "${RANKING_GENOMES:-20}" --scratch-epochs "${SCRATCH_EPOCHS:-15}" --workers "$WORKERS" \
    --cache-dir "$JOBS/supernet_cache" $(job_overrides)
  wait_job ranking "$JOBS/ranking/ranking.json"
}

# The sweep and its report in one job; the report's files come back once it has run.
methods() {
  local sweep=$JOBS/methods/sweep
  start_job methods bash -c 'python3 -m aebnas.cli.search -m "$@" && python3 -m aebnas.cli.report "$0" --out "$0/report"' \
    "$sweep" $METHODS_EXPERIMENT dataset.data_dir="$DATA_DIR" trainer.cudnn="$CUDNN" workers="$WORKERS" \
    ${METHODS_OVERRIDES:-} ${EXTRA_ARGS[*]} progress=false hydra.sweep.dir="$sweep"
  wait_job methods "$sweep/report/summary.md" "$sweep/report/runs.csv" "$sweep/report/fronts.png" \
    "$sweep/report/summary.tex"
}

GPU_EXPERIMENT=experiment=fashion_mnist_gpu
METHODS_EXPERIMENT=experiment=methods_fashion_mnist_gpu
PROFILE_HARDWARE="h100 h100_b256"
case "$STAGE" in
  probe) probe ;;
  search) search ;;
  ranking) ranking ;;
  methods) methods ;;
  smoke)
    # Toy sizes on the CPU: every command above runs, the figures mean nothing.
    JOBS=$(mktemp -d /tmp/aebnas-gpu-smoke.XXXXXX)
    SIZE_OVERRIDES="dataset.max_train_samples=600 dataset.val_size=300 dataset.resolution=16
      dataset.pad_to_resolution=false space=tiny
      trainer=quick trainer.epochs=1 trainer.device=cpu trainer.num_threads=1 supernet.batch_size=64"
    SUPERNET_EPOCHS=1 WAIT=600 RANKING_GENOMES=3 SCRATCH_EPOCHS=1 WORKERS=2 PROBE_CANDIDATES=2
    PROFILE_HARDWARE=cpu_x86_2t SKIP_TRAIN_STEP=1  # bench_train_step.py needs CUDA
    PROFILE_OVERRIDES="space=tiny profile.resolution=8 profile.channels=1 profile.networks=5
      hardware.table_dir=$JOBS/tables"
    TABLES=$JOBS/tables
    export STREAM_SMOKE=1
    ( probe )
    EXTRA="search.pop_size=4 search.generations=1 ${EXTRA:-}"; read -r -a EXTRA_ARGS <<< "$EXTRA"
    search
    ranking
    METHODS_EXPERIMENT=experiment=methods_quickstart METHODS_OVERRIDES="method=aebnas,manual seed=0"
    EXTRA_ARGS=()
    methods
    ;;
  *) echo "STAGE must be probe, search, ranking, methods or smoke, not '$STAGE'" >&2; exit 2 ;;
esac
