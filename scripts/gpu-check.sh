#!/usr/bin/env bash
# One prepared command for a GPU machine (no network, no crates): golden parity through the CLI on
# CUDA f32, bf16 vs f32, `fungi bench` for ViT-S/16 and ViT-B/16 (kl,dino,simclr; batch 16 and 64;
# f32 and bf16) and fungivision 0.0.2 on the same GPU (use_fp16 False/True); one JSON summary and
# the logs in the output folder. Each step runs on its own: one failure does not lose the others.
#
# On the CPU machine, first:
#   cargo build --release -p fungi-cli --no-default-features --features cuda
#   pip download --no-deps fungivision==0.0.2 -d wheels/      # fungivision travels as a wheel
# then on the GPU machine (designed to finish in about 8 minutes, start-up included):
#   scripts/gpu-check.sh --fungi target/release/fungi --out gpu-check-out \
#       --fungivision-wheel wheels/fungivision-0.0.2-py3-none-any.whl
# Proven end to end on a CPU (fungivision on torch CPU; small batches so it ends in minutes):
#   scripts/gpu-check.sh --fungi target/release/fungi --out /tmp/gpu-check --device flex \
#       --batches 1 --iters 1
# Options (all passed to scripts/gpu_check.py): --device (cuda), --batches (16,64), --archs
# (dino_vits16,dino_vitb16), --precisions (f32,bf16 on cuda), --iters (2), --python (python3:
# the interpreter with torch and timm), --budget (450 s for the steps), --skip <step prefixes>.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# cudarc loads libcuda/libnvrtc at run time: make the toolkit's and torch's bundled NVIDIA
# libraries findable.
libs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  [[ -d $d ]] && libs+=("$d")
done
nv=$("$PY" -c 'import nvidia, os; print(os.pathsep.join(p for p in nvidia.__path__))' 2>/dev/null || true)
if [[ -n $nv ]]; then
  IFS=: read -ra roots <<<"$nv"
  for r in "${roots[@]}"; do
    for d in "$r"/*/lib; do [[ -d $d ]] && libs+=("$d"); done
  done
fi
if ((${#libs[@]})); then
  LD_LIBRARY_PATH="$(IFS=:; echo "${libs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH
fi
exec "$PY" scripts/gpu_check.py --python "$PY" "$@"
