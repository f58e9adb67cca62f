#!/usr/bin/env bash
# The one prepared GPU call (docs/backends.md, "The GPU check"). On the CPU machine first:
#
#   scripts/gpu-pack.sh                     # CUDA CLI + parity reference + fungivision wheel -> .gpu/
#
# then one device call, from the repository root, with `.gpu` carried:
#
#   scripts/gpu-check.sh                    # writes summary.json, logs.tgz, caches.tgz to $OUT
#
# Everything else is an option of scripts/gpu_check.py (--device, --archs, --batches, --iters,
# --budget, --skip, --python; see its --help). The CUDA toolkit's folder (CUDA_PATH, for the
# headers NVRTC compiles kernels against) and LD_LIBRARY_PATH (libcuda, libnvrtc) are found by
# gpu_check.py and set for the fungi processes only. Rehearse the same call on the CPU with
# scripts/gpu-rehearse.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
exec "$PY" scripts/gpu_check.py --python "$PY" "$@"
