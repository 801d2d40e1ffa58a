#!/usr/bin/env bash
# One short run that answers the GPU questions when an accelerator is lent: the throughput,
# real-size and scaling benchmarks at sizes that finish in under 6 minutes on one GPU.
# Usage: bash benchmarks/device_check.sh [OUT_DIR]   (default: benchmarks/results/device)
# Writes OUT_DIR/{env.txt,throughput.json,real_size.json,scaling.json} and their plots;
# a benchmark that fails leaves its error in OUT_DIR/<name>.log and the others still run.
set -u
OUT="${1:-benchmarks/results/device}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  python -c "import jax; print(jax.__version__, jax.devices())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
} > "$OUT/env.txt" 2>&1
status=0
run() {  # name, seconds, command...
  local name="$1" limit="$2"; shift 2
  echo "== $name (at most ${limit}s)"
  if ! timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
    echo "   $name failed or timed out: see $OUT/$name.log"; status=1
  fi
  tail -n 25 "$OUT/$name.log"
}
run throughput 100 python benchmarks/throughput.py --sizes 8 128 --rounds 2 --seconds 1 \
  --out "$OUT/throughput.json" --plot "$OUT/throughput.png"
run real_size 170 python benchmarks/real_size.py --sizes 8 32 --frames-sizes 8 --rounds 1 \
  --train-n 4096 --arms population jax_serial --eval-vals 1000 50000 \
  --out "$OUT/real_size.json" --plot "$OUT/real_size.png"
run scaling 80 python benchmarks/scaling.py --sizes 8 128 1024 --devices 1 --no-ga \
  --out "$OUT/scaling.json" --plot "$OUT/scaling.png"
exit $status
