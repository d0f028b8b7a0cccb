#!/usr/bin/env bash
# Issue #10's soak on the GPU machine for longer than one device call may run (600 s including the
# build): `start` builds, then starts apps/server/bench/soak.mjs in its own session (setsid, so it
# outlives the call; checked on the machine: a setsid'd process keeps running between calls while
# the machine stays warm, i.e. with at most 30 s between calls) and returns; `wait` polls until the
# soak has finished (or 570 s have passed: call it again) and copies its results to $OUT.
#   bash scripts/pack-dists.sh here, then device run, carry [".device", ".dists.tar"]:
#     bash scripts/gpu-soak.sh start [SECONDS=660]      # then, within 30 s:
#     bash scripts/gpu-soak.sh wait                      # repeat until it prints "soak finished"
#   SOAK_DEVICE=cpu SOAK_WARMUP=5 SOAK_CLIENTS=8 … start 25: a dry run of the flow here (no GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-soak-out}"
DIR=/tmp/gpu-soak
mkdir -p "$OUT" "$DIR"
source scripts/device-env.sh  # the carried Node, node_modules and dists
case "${1:-}" in
  start)
    secs="${2:-660}"
    export CMAKE_CUDA_ARCHITECTURES=90a
    [ -f native/build/Release/gemma3.node ] ||
      (cd native && node scripts/build.mjs) >"$DIR/build.log" 2>&1 || { tail -30 "$DIR/build.log"; exit 1; }
    node apps/cli/scripts/make-demo.mjs >/dev/null && node apps/cli/scripts/copy-tokenizer.mjs >/dev/null
    dev="${SOAK_DEVICE:-cuda}"  # SOAK_DEVICE=cpu: a dry run of the two-call flow without a GPU
    smi() { command -v nvidia-smi >/dev/null && nvidia-smi "$@" || true; }
    smi --query-gpu=name,driver_version,memory.total --format=csv >"$DIR/gpu.txt"
    rm -f "$DIR/done" "$DIR/soak-gpu-mem.csv"
    setsid nohup bash -c "
      (while [ ! -f '$DIR/done' ]; do
        command -v nvidia-smi >/dev/null &&
          nvidia-smi -i ${SOAK_GPU:-0} --query-gpu=timestamp,memory.used --format=csv,noheader >>'$DIR/soak-gpu-mem.csv'
        sleep 10
      done) &
      node apps/server/bench/soak.mjs --seconds $secs --warmup ${SOAK_WARMUP:-60} --clients ${SOAK_CLIENTS:-96} --device $dev \
        >'$DIR/soak.json' 2>'$DIR/soak.log'
      echo \$? >'$DIR/done'
    " >/dev/null 2>&1 </dev/null &
    disown
    sleep 2
    echo "soak of ${secs}s started at $(date -u +%T); call 'wait' within 30 s of this call's end"
    ;;
  wait)
    for _ in $(seq 1 "${WAIT_POLLS:-114}"); do
      [ -f "$DIR/done" ] && break
      sleep 5
    done
    cp "$DIR"/*.json "$DIR"/*.log "$DIR"/*.csv "$DIR"/gpu.txt "$OUT"/ 2>/dev/null
    if [ -f "$DIR/done" ]; then
      echo "soak finished, exit $(cat "$DIR/done")"
      tail -c 1500 "$DIR/soak.json"
      echo
      [ -f "$DIR/soak-gpu-mem.csv" ] &&
        awk -F', ' '{v=$2+0; if(NR==1||v<min)min=v; if(v>max)max=v} END{print "device memory", min, "to", max, "MiB over", NR, "samples"}' "$DIR/soak-gpu-mem.csv"
    else
      echo "soak still running at $(date -u +%T): call 'wait' again within 30 s"
    fi
    ;;
  *)
    echo "usage: gpu-soak.sh start [SECONDS] | wait" >&2
    exit 2
    ;;
esac
