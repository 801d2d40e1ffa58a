#!/usr/bin/env bash
# Runs benchmarks/xla_qr_deadlock.py under several jax/jaxlib releases, each installed into
# its own folder (pip install --target), appending to benchmarks/results/xla_qr_deadlock.json.
#   bash benchmarks/xla_qr_releases.sh [VERSION ...]
set -u
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(0.10.2 0.10.0 0.9.2 0.9.0 0.8.3 0.8.0 0.7.2 0.7.0)
for v in "${versions[@]}"; do
  dir="${JAX_RELEASES_DIR:-/tmp/jax-releases}/$v"
  [ -d "$dir/jax" ] || pip install -q --no-deps --target "$dir" "jax==$v" "jaxlib==$v" \
    ml_dtypes opt_einsum || { echo "jax $v: install failed"; continue; }
  PYTHONPATH="$dir" python benchmarks/xla_qr_deadlock.py --timeout 60 \
    --json benchmarks/results/xla_qr_deadlock.json
done
