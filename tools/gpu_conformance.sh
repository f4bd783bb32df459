#!/usr/bin/env bash
# Run the conformance suite on a GPU machine that has no network and no TensorFlow.
#
#   tools/gpu_conformance.sh OUT_DIR [BACKEND ...]     (default backends: torch jax)
#
# Installs the project in place without dependencies (so the entry points exist), lists the
# backends, then runs every requested backend on every device, each in its own process, and
# fails if a backend has no usable GPU. Writes backends.txt, conformance.txt, conformance.json
# and conformance.html under OUT_DIR.
set -euo pipefail
out="${1:?usage: tools/gpu_conformance.sh OUT_DIR [BACKEND ...]}"
shift
if [ $# -gt 0 ]; then backends=("$@"); else backends=(torch jax); fi
cd "$(dirname "$0")/.."
mkdir -p "$out"
python3 -m pip install --quiet --no-deps --no-build-isolation -e . >"$out/install.txt" 2>&1 \
  || { cat "$out/install.txt"; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader | tee "$out/gpu.txt" || true
python3 -m bce_core backends | tee "$out/backends.txt"
args=()
for name in "${backends[@]}"; do args+=(--backend "$name"); done
set +e
PYTHONUNBUFFERED=1 python3 -m bce_core conformance "${args[@]}" --device all --require-device \
  --isolate --json "$out/conformance.json" --html "$out/conformance.html" \
  2>&1 | tee "$out/conformance.txt"
status=${PIPESTATUS[0]}
set -e
echo "conformance exit code: $status" | tee -a "$out/conformance.txt"
exit "$status"
