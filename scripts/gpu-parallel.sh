#!/usr/bin/env bash
# Runs device scripts side by side on a machine of several GPUs, one script per GPU, each in its own
# copy of the tree (its own native build, CUDA_VISIBLE_DEVICES set to its GPU), in the background
# (setsid: it outlives the call while the machine stays warm, i.e. ≤ 30 s between calls, as
# gpu-soak.sh). `wait` polls until all have finished (or 570 s: call it again) and packs each job's
# output folder and log into $OUT/parallel.tar.gz (a device call brings back only a few files).
#   bash scripts/gpu-parallel.sh start "1:gpu-check.sh --tests-only" "2:gpu-bench.sh" …
#   bash scripts/gpu-parallel.sh wait
# Benchmarks run this way share the host's CPUs with the other jobs; say so where they are quoted.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-parallel-out}"
DIR=/tmp/gpu-parallel
mkdir -p "$OUT" "$DIR"
case "${1:-}" in
  start)
    shift
    n=0
    for job in "$@"; do
      gpu="${job%%:*}" cmd="${job#*:}"
      n=$((n + 1))
      tree="$DIR/tree$n"
      rm -rf "$tree" "$DIR/job$n"
      mkdir -p "$tree" "$DIR/job$n"
      # the tree without its build (a CMake cache is tied to its path); node_modules and dists come along
      tar --exclude=./native/build --exclude=./.git -cf - . | tar -xf - -C "$tree"
      echo "$gpu: $cmd" >"$DIR/job$n/job.txt"
      setsid nohup bash -c "cd '$tree' && { [ ! -f .dists.tar ] || tar -xf .dists.tar; } && CUDA_VISIBLE_DEVICES=$gpu OUT='$DIR/job$n' bash scripts/$cmd \
        >'$DIR/job$n/stdout.log' 2>&1; echo \$? >'$DIR/job$n/done'" >/dev/null 2>&1 </dev/null &
      disown
      echo "job $n on GPU $gpu started: $cmd"
    done
    ;;
  wait)
    for _ in $(seq 1 "${WAIT_POLLS:-114}"); do
      left=0
      for d in "$DIR"/job*; do [ -f "$d/done" ] || left=$((left + 1)); done
      [ "$left" = 0 ] && break
      sleep 5
    done
    for d in "$DIR"/job*; do
      echo "== $(basename "$d") [$(cat "$d/job.txt")]: $([ -f "$d/done" ] && echo "exit $(cat "$d/done")" || echo running)"
    done
    (cd "$DIR" && tar -czf "$OUT/parallel.tar.gz" job*)
    [ "$left" = 0 ] && echo "all jobs finished" || echo "$left job(s) still running: call 'wait' again within 30 s"
    ;;
  *)
    echo "usage: gpu-parallel.sh start GPU:SCRIPT… | wait" >&2
    exit 2
    ;;
esac
