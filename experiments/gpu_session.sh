#!/usr/bin/env bash
# The GPU figures still open (docs/results/index.md, "Not measured"), in stages that fit a device machine's
# limits: 10 minutes a command, at most 8 files back from $OUT, and 15 minutes of device time a budget,
# machine starts included: one probe, or one long-stage call of about 10 minutes, per budget.
#
#   STAGE=probe  OUT=$OUT bash experiments/gpu_session.sh                         # one call, <= 9.5 min
#   STAGE=search CUDNN_DEPTHWISE=false OUT=$OUT bash experiments/gpu_session.sh   # again until "finished" (a 15-min
#                                                            budget holds one such call)
#   STAGE=ranking CUDNN_DEPTHWISE=false OUT=$OUT bash experiments/gpu_session.sh  # likewise
#   STAGE=methods CUDNN_DEPTHWISE=false OUT=$OUT bash experiments/gpu_session.sh  # likewise
#
# probe: PyTorch's depthwise kernel against cuDNN's (numbers), then what a training step costs with and
#   without it and autotuning, and recorded as a CUDA graph, each in a fresh process (bench_train_step.py
#   --fresh); three supernet-path candidates with trainer.cudnn_depthwise=false and trainer.cuda_graphs=true (the first epoch
#   of a new candidate cost 27-36 s with cuDNN on an H100); the adaptive-runtime stream benchmark on the network trained
#   on the CPU (.gpu/fmnist_stream_run, or, where this checkout lacks it, the same genome trained on the GPU
#   first: STREAM_EPOCHS, default 15, within LIMIT_STREAM_TRAIN, default 240 s); latency tables of the GPU
#   it runs on (h100 or h200, batch 1 and 256, by nvidia-smi's name). Each step has its own time
#   limit, capped so the whole probe
#   ends by PROBE_BUDGET seconds, and the results are re-packed after every step: a call cut short still
#   returns what finished. Returns probe.log and probe.tar.gz.
# search / ranking / methods: jobs longer than one command. The first call starts the job in its own
#   process session (it outlives the command while the machine stays held); every call, the first too,
#   waits up to WAIT seconds, copying what the job has written to $OUT every 30 s. Call again within the
#   machine's warm time (30 s), or the machine and the job are gone. A call with other settings than the
#   running job's, or RESTART=1, sets the old job aside and starts anew. Job state: /tmp/aebnas-gpu-jobs.
#   search: experiment=fashion_mnist_gpu (40 x 9 = 360 candidates of the supernet path), the whole
#   search timed by the clock, supernet training included (the target: <= 30 min on one GPU).
#   ranking: bench_ranking.py, 20 genomes, supernet path vs 15 epochs from scratch (the Kendall tau target),
#   with fresh exit heads, then with joint ones (supernet.exits=joint) against the same from-scratch half.
#   methods: the method comparison, experiment=methods_fashion_mnist_gpu (6 methods x 3 seeds, from scratch),
#   then aebnas-report on the sweep; the report's tables and figure come back.
#
# Run from the repo root with the package importable: the device call's command starts with the
# prefix that ../shared/gpu/prepare.sh prints (it installs pymoo and hydra-core into /tmp/site), and
# carries .gpu. .git does not travel: pass GIT_REV=$(git rev-parse --short HEAD) so results name the code.
# Knobs (env): CUDNN_DEPTHWISE (trainer.cudnn_depthwise of the long stages; required, from the probe),
# DATA_DIR (Fashion-MNIST idx .gz files, default .gpu/fashion-mnist), WORKERS (candidates at once,
# default 4), SUPERNET_EPOCHS (default 10: 237.7 s measured on an H100), WAIT (seconds a
# long-stage call waits, default 540), PROBE_BUDGET (default 540), EXTRA (more Hydra overrides for the
# long stages, space-separated), RESTART=1.
# STAGE=smoke runs every stage's commands at toy sizes on a CPU in a few minutes: a check of the script,
# not of any figure.
set -uo pipefail
export PYTHONUNBUFFERED=1

STAGE=${STAGE:?set STAGE to probe, search, ranking, methods or smoke}
OUT=${OUT:?set OUT to the output folder}
WORKERS=${WORKERS:-4}
SUPERNET_EPOCHS=${SUPERNET_EPOCHS:-10}
WAIT=${WAIT:-540}
PROBE_BUDGET=${PROBE_BUDGET:-540}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
ROOT=$(pwd)
# Not under .gpu/: every device call replaces the carried .gpu/ with this machine's copy, which would pull
# a running job's files from under it. /tmp lasts as long as the machine is held.
JOBS=${JOBS:-/tmp/aebnas-gpu-jobs}
mkdir -p "$OUT" "$JOBS"
START=$SECONDS

stamp() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - START))s] $*"; }

# The data, copied once to where the next call's carry cannot replace it under a running job.
stage_data() {
  local src=${DATA_DIR:-.gpu/fashion-mnist}
  if [[ ! -f "$JOBS/data/train-images-idx3-ubyte.gz" ]]; then
    [[ -f "$src/train-images-idx3-ubyte.gz" ]] || { echo "no Fashion-MNIST idx files in $src (DATA_DIR)" >&2; exit 2; }
    mkdir -p "$JOBS/data" && cp "$src"/*.gz "$JOBS/data/"
  fi
  DATA_DIR=$JOBS/data
}

machine_facts() {
  stamp "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  grep -m1 "model name" /proc/cpuinfo || true
  echo "cpus: $(nproc)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn',
torch.backends.cudnn.version(), 'available', torch.cuda.is_available())"
  echo "code: ${GIT_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown: pass GIT_REV)}"
  python3 -c "import pymoo, hydra, aebnas" || { echo "pymoo/hydra/aebnas not importable: start the command with the prefix of ../shared/gpu/prepare.sh" >&2; exit 2; }
}

# step LIMIT CMD...: runs CMD under LIMIT seconds, cut to what is left of PROBE_BUDGET; failures are logged.
step() {
  local limit=$1; shift
  local left=$((PROBE_BUDGET - (SECONDS - START) - 15))
  (( limit > left )) && limit=$left
  if (( limit < 10 )); then stamp "no time left for: $*"; return; fi
  stamp "step (limit ${limit}s): $*"
  timeout --kill-after=5 "$limit" "$@"
  local rc=$?
  stamp "step rc=$rc$([[ $rc == 124 || $rc == 137 ]] && echo ' (time limit)')"
}

# The probe's folder as one tarball in $OUT, replaced whole (a cut call never leaves half a file).
pack_probe() {
  tar -czf "$OUT/probe.tar.gz.tmp" -C "$(dirname "$1")" "$(basename "$1")" && mv "$OUT/probe.tar.gz.tmp" "$OUT/probe.tar.gz"
}

probe() {
  local w=$JOBS/probe_$(date -u +%H%M%S)
  mkdir -p "$w"
  exec > >(tee -a "$OUT/probe.log") 2>&1
  machine_facts
  stage_data
  if [[ -z "${SKIP_TRAIN_STEP:-}" ]]; then
    # Each variant in its own process on one network: the clean comparison of the four that decide
    # cudnn_depthwise, and (third, so that a cut call keeps it) the default with the step recorded as a CUDA
    # graph (trainer.cuda_graphs).
    step "${LIMIT_TRAIN_STEP:-180}" python3 experiments/bench_train_step.py --out "$w/train_step.json" \
      --fresh --variants 5 --no-supernet --row-timeout 40 $GPU_EXPERIMENT dataset.data_dir="$DATA_DIR" \
      ${SIZE_OVERRIDES:-}
    pack_probe "$w"
  fi
  # The supernet's quality does not change a candidate's time: one epoch is enough to time candidates. They
  # run with every setting built against the 4 s per-candidate target (PyTorch's depthwise kernel, the step as a CUDA graph;
  # PROBE_GRAPHS=false for eager steps): the figure closest to the target. The JSON's overrides name them.
  step "${LIMIT_CANDIDATES:-150}" python3 experiments/bench_search_speed.py \
    --out "$w/candidates.json" --candidates "${PROBE_CANDIDATES:-3}" \
    --cache-dir "$JOBS/probe_cache" $GPU_EXPERIMENT dataset.data_dir="$DATA_DIR" supernet.epochs=1 \
    trainer.cudnn_depthwise=false trainer.cuda_graphs="${PROBE_GRAPHS:-true}" ${SIZE_OVERRIDES:-}
  pack_probe "$w"
  if [[ -d "${STREAM_RUN:-.gpu/fmnist_stream_run}" ]]; then
    RUN_FROM=${STREAM_RUN:-.gpu/fmnist_stream_run} OUT=$w/stream DATA_DIR=$DATA_DIR \
      step "${LIMIT_STREAM:-120}" bash experiments/gpu_stream_job.sh
    rm -f "$w/stream/stream_run.tar.gz"  # the weights came from this repo's .gpu/ in the first place
    pack_probe "$w"
  else
    # .gpu/ is ignored by git, so a new machine's checkout has no CPU-trained network: train the same genome
    # on the GPU (its weights come back inside probe.tar.gz as stream/stream_run.tar.gz).
    stamp "no trained stream network in ${STREAM_RUN:-.gpu/fmnist_stream_run}: training it on the GPU first"
    OUT=$w/stream DATA_DIR=$DATA_DIR EPOCHS=${STREAM_EPOCHS:-15} \
      step "${LIMIT_STREAM_TRAIN:-240}" bash experiments/gpu_stream_job.sh
    pack_probe "$w"
  fi
  # The CUDA-only tests (the recorded step against the eager one, the depthwise routing): the CPU skips them.
  step "${LIMIT_TESTS:-45}" python3 -m pytest -q -rs -p no:cacheprovider tests/test_train_steps.py \
    tests/test_depthwise.py 2>&1 | tail -n 15
  [[ -n "$PROFILE_HARDWARE" ]] || stamp "no latency-table config for this GPU in conf/hardware: profiling skipped"
  for hw in $PROFILE_HARDWARE; do
    step "${LIMIT_PROFILE:-60}" python3 -m aebnas.cli.profile hardware="$hw" space=mbv3_32 profile.resolution=32 \
      profile.channels=3 profile.num_classes=10 profile.validate=true profile.networks=20 progress=false \
      hydra.run.dir="$w/profile_$hw" ${PROFILE_OVERRIDES:-}
    cp -r "${TABLES:-aebnas/conf/hardware/tables/$hw}" "$w/profile_$hw/table" 2>/dev/null || true
    pack_probe "$w"
  done
  stamp "probe done: probe.log and probe.tar.gz"
}

# start_job NAME CMD...: starts CMD once as job NAME in its own process session. A later call finds it
# running or finished; one with another command (other knobs), or RESTART=1, sets the old job aside.
start_job() {
  local name=$1; shift
  local dir=$JOBS/$name
  if [[ -f "$dir/pid" ]]; then
    if [[ "${RESTART:-0}" != 1 && "$(cat "$dir/cmd")" == "$*" ]]; then return; fi
    kill -- -"$(cat "$dir/pid")" 2>/dev/null || true
    mv "$dir" "$dir.old.$(date -u +%H%M%S)"
    stamp "set the earlier $name job aside (other settings, or RESTART=1)"
  fi
  mkdir -p "$dir"
  echo "$*" > "$dir/cmd"
  date -u +%s > "$dir/start"
  setsid bash -c 'cd "$1"; shift; dir=$1; shift; "$@" > "$dir/job.log" 2>&1; echo $? > "$dir/rc"; date -u +%s > "$dir/end"' \
    _ "$ROOT" "$dir" "$@" < /dev/null &
  echo $! > "$dir/pid"
  stamp "started job $name (pid $(cat "$dir/pid")): $*"
}

# wait_job NAME FILE...: waits up to WAIT seconds for job NAME, copying its log and FILEs to $OUT every 30 s.
wait_job() {
  local name=$1; shift
  local dir=$JOBS/$name
  local deadline=$((SECONDS + WAIT)) next_copy=0 f
  while true; do
    if (( SECONDS >= next_copy )); then
      cp "$dir/job.log" "$OUT/$name.log" 2>/dev/null
      for f in "$@"; do [[ -e "$f" ]] && cp "$f" "$OUT/"; done
      next_copy=$((SECONDS + 30))
    fi
    [[ -f "$dir/rc" ]] && break
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { sleep 2; [[ -f "$dir/rc" ]] && break; stamp "job $name died without an exit status"; break; }
    (( SECONDS >= deadline )) && break
    sleep 5
  done
  cp "$dir/job.log" "$OUT/$name.log" 2>/dev/null
  for f in "$@"; do [[ -e "$f" ]] && cp "$f" "$OUT/"; done
  if [[ -f "$dir/rc" ]]; then
    stamp "job $name finished: rc=$(cat "$dir/rc"), $(( $(cat "$dir/end") - $(cat "$dir/start") )) s by the clock"
  else
    stamp "job $name still running after $(( $(date -u +%s) - $(cat "$dir/start") )) s: call again within 30 s"
  fi
  tail -n 15 "$OUT/$name.log"
}

# The Hydra overrides every long stage shares; CUDNN_DEPTHWISE must be chosen from the probe.
job_overrides() {
  echo "dataset.data_dir=$DATA_DIR trainer.cudnn_depthwise=$CUDNN_DEPTHWISE" \
       "${SIZE_OVERRIDES:-} ${EXTRA_ARGS[*]}"
}

search() {
  local run=$JOBS/search/run
  start_job search python3 -m aebnas.cli.search $GPU_EXPERIMENT $(job_overrides) supernet.epochs="$SUPERNET_EPOCHS" \
    supernet.cache_dir="$JOBS/supernet_cache" workers="$WORKERS" progress=false hydra.run.dir="$run"
  wait_job search "$run/summary.json" "$run/generations.csv" "$run/pareto.csv"
}

# Fresh exit heads against training from scratch, then joint heads (supernet.exits=joint) against the same
# from-scratch half: which ranks better is the open question about exit heads.
ranking() {
  local r=$JOBS/ranking
  start_job ranking bash -c 'python3 experiments/bench_ranking.py --out "$0/ranking.json" "$@" &&
    python3 experiments/bench_ranking.py --out "$0/ranking_joint.json" --scratch-json "$0/ranking.json" "$@" \
      supernet.exits=joint' "$r" \
    --genomes "${RANKING_GENOMES:-20}" --scratch-epochs "${SCRATCH_EPOCHS:-15}" --workers "$WORKERS" \
    --cache-dir "$JOBS/supernet_cache" $GPU_EXPERIMENT $(job_overrides) supernet.epochs="$SUPERNET_EPOCHS" \
    supernet.cache_dir="$JOBS/supernet_cache"
  wait_job ranking "$r/ranking.json" "$r/ranking_joint.json"
}

# The sweep and its report in one job; the report's files come back once it has run.
methods() {
  local sweep=$JOBS/methods/sweep
  start_job methods bash -c 'python3 -m aebnas.cli.search -m "$@" && python3 -m aebnas.cli.report "$0" --out "$0/report"' \
    "$sweep" $METHODS_EXPERIMENT $(job_overrides) workers="$WORKERS" ${METHODS_OVERRIDES:-} progress=false \
    hydra.sweep.dir="$sweep"
  wait_job methods "$sweep/report/summary.md" "$sweep/report/runs.csv" "$sweep/report/fronts.png" \
    "$sweep/report/summary.tex"
}

GPU_EXPERIMENT=experiment=fashion_mnist_gpu
METHODS_EXPERIMENT=experiment=methods_fashion_mnist_gpu
# The latency tables are named after the GPU they are measured on (aebnas/conf/hardware/h100*.yaml, h200*.yaml).
gpu_tables() {
  case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)" in
    *H200*) echo "h200 h200_b256" ;;
    *H100*) echo "h100 h100_b256" ;;
    *) echo "" ;;
  esac
}
PROFILE_HARDWARE=${PROFILE_HARDWARE-$(gpu_tables)}
case "$STAGE" in
  probe) probe ;;
  search|ranking|methods)
    [[ "${CUDNN_DEPTHWISE:-}" == true || "${CUDNN_DEPTHWISE:-}" == false ]] ||
      { echo "set CUDNN_DEPTHWISE=true or false (trainer.cudnn_depthwise), from the probe's train_step.json" >&2; exit 2; }
    exec > >(tee -a "$OUT/$STAGE.call.log") 2>&1; machine_facts; stage_data; "$STAGE" ;;
  smoke)
    # Toy sizes on the CPU: every command above runs, the figures mean nothing.
    JOBS=$(mktemp -d /tmp/aebnas-gpu-smoke.XXXXXX)
    SIZE_OVERRIDES="dataset.max_train_samples=600 dataset.val_size=300 dataset.resolution=16
      dataset.pad_to_resolution=false space=tiny trainer=quick trainer.epochs=1 trainer.device=cpu
      trainer.num_threads=1 supernet.batch_size=64"
    SUPERNET_EPOCHS=1 WAIT=600 RANKING_GENOMES=3 SCRATCH_EPOCHS=1 WORKERS=2 PROBE_CANDIDATES=2 STREAM_EPOCHS=2
    PROFILE_HARDWARE=cpu_x86_2t SKIP_TRAIN_STEP=1  # bench_train_step.py needs CUDA
    PROFILE_OVERRIDES="space=tiny profile.resolution=8 profile.channels=1 profile.networks=5
      hardware.table_dir=$JOBS/tables"
    TABLES=$JOBS/tables CUDNN_DEPTHWISE=false
    export STREAM_SMOKE=1
    ( probe )
    stage_data
    EXTRA="search.pop_size=4 search.generations=1 ${EXTRA:-}"; read -r -a EXTRA_ARGS <<< "$EXTRA"
    search
    ranking
    METHODS_EXPERIMENT=experiment=methods_quickstart METHODS_OVERRIDES="method=aebnas,manual seed=0"
    EXTRA_ARGS=() SIZE_OVERRIDES="trainer.device=cpu"
    methods
    ;;
  *) echo "STAGE must be probe, search, ranking, methods or smoke, not '$STAGE'" >&2; exit 2 ;;
esac
