#!/usr/bin/env bash
# fungi-rs against PyTorch on THIS machine, in one run: ViT forward (vs timm) and FUNGI
# extraction (vs fungivision 0.0.2), printed as ratios, with the CPU model and flags.
#
#   python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.9.0 \
#       torchvision==0.24.0 timm fungivision==0.0.2
#   PYTHON=/tmp/torchenv/bin/python scripts/bench-vs-torch.sh [forward|extract|all]
#
# Env: FUNGI_BENCH_ARCHS (dino_vits16,dino_vitb16), FUNGI_BENCH_BATCHES (1,8),
# FUNGI_BENCH_OBJECTIVES for extract (kl,all), FUNGI_BENCH_REPS (3), FUNGI_BENCH_THREADS (2:
# both sides are pinned to the same thread count). Output: target/bench-vs-torch/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHAT=${1:-all}
THREADS=${FUNGI_BENCH_THREADS:-2}
export FUNGI_BENCH_ARCHS=${FUNGI_BENCH_ARCHS:-dino_vits16,dino_vitb16}
export FUNGI_BENCH_BATCHES=${FUNGI_BENCH_BATCHES:-1,8}
export FUNGI_BENCH_REPS=${FUNGI_BENCH_REPS:-3}
export RAYON_NUM_THREADS=$THREADS FUNGI_BENCH_THREADS=$THREADS
OUT=target/bench-vs-torch
mkdir -p "$OUT"

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_bf16|amx_bf16)$' | tr '\n' ' ')"
echo "threads: $THREADS   $(date -u +%FT%TZ)   load: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $WHAT == forward || $WHAT == all ]]; then
  cargo bench -q -p fungi-backbone --features flex --bench gemm 2>/dev/null | tee "$OUT/gemm.txt"
  cargo bench -q -p fungi-tests --bench vit_forward 2>/dev/null | tee "$OUT/rust_forward.txt"
  "$PY" tests/scripts/bench_timm_forward.py "$FUNGI_BENCH_ARCHS" "$FUNGI_BENCH_BATCHES" | tee "$OUT/timm_forward.txt"
fi
if [[ $WHAT == extract || $WHAT == all ]]; then
  export FUNGI_BENCH_OBJECTIVES=${FUNGI_BENCH_OBJECTIVES:-kl,all}
  cargo bench -q -p fungi-tests --bench extract 2>/dev/null | tee "$OUT/rust_extract.txt"
  "$PY" tests/scripts/bench_fungivision.py "$FUNGI_BENCH_OBJECTIVES" "$FUNGI_BENCH_BATCHES" "$FUNGI_BENCH_ARCHS" \
    | tee "$OUT/fungivision.txt"
fi

"$PY" - "$OUT" "$WHAT" <<'PYEOF'
import os, re, sys
out, what = sys.argv[1], sys.argv[2]
def rows(name):
    p = os.path.join(out, name)
    return [l.split() for l in open(p)] if os.path.exists(p) else []
# Multiply-adds of one CLS forward (the last block's MLP/proj run on the CLS row only).
def flops(arch):
    d = {"dino_vits16": 384, "dino_vitb16": 768}[arch]; t = 197
    blk = t * (3 * d * d + d * d + 8 * d * d) + 2 * t * t * d
    last = t * 3 * d * d + 2 * t * d + 1 * (d * d + 8 * d * d)
    return 2 * (11 * blk + last)
peak = {}
for r in rows("gemm.txt"):
    if r and r[0] == "square": peak["gemm crate"] = float(r[4])
for r in rows("timm_forward.txt"):
    m = re.search(r"gemm_f32_4096 ([\d.]+)", " ".join(r))
    if m: peak["torch"] = float(m.group(1))
top = max(peak.values()) if peak else None
if what in ("forward", "all"):
    rust = {(r[0], r[1]): float(r[3]) for r in rows("rust_forward.txt") if len(r) == 5 and r[0].startswith("dino")}
    timm = {(r[0], r[1]): float(r[3]) for r in rows("timm_forward.txt") if len(r) == 5 and r[0].startswith("dino")}
    print(f"\nf32 GEMM 4096³ peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    print(f"{'forward':<14} {'batch':>5} {'fungi-rs':>9} {'timm':>9} {'ratio':>6} {'rs GF/s':>8} {'%peak':>6} {'timm GF/s':>9}")
    for k in rust:
        if k in timm:
            f = flops(k[0]) / 1e9
            pk = f"{100 * rust[k] * f / top:.0f}%" if top else "-"
            print(f"{k[0]:<14} {k[1]:>5} {rust[k]:>9.2f} {timm[k]:>9.2f} {rust[k] / timm[k]:>6.2f} {rust[k] * f:>8.0f} {pk:>6} {timm[k] * f:>9.0f}")
if what in ("extract", "all"):
    rust = {(r[0], r[1], r[2]): (float(r[3]), float(r[6])) for r in rows("rust_extract.txt") if len(r) == 7 and r[0].startswith("dino")}
    fv = {(r[0], r[1], r[2]): (float(r[3]), float(r[5])) for r in rows("fungivision.txt") if len(r) == 8 and r[0].startswith("dino")}
    print(f"\n{'extract':<12} {'objective':<9} {'batch':>5} {'fungi-rs':>9} {'fungivision':>11} {'ratio':>6} {'rs MB':>7} {'fv MB':>7}")
    for k in rust:
        if k in fv:
            print(f"{k[0]:<12} {k[1]:<9} {k[2]:>5} {rust[k][0]:>9.3f} {fv[k][0]:>11.3f} {rust[k][0] / fv[k][0]:>6.2f} {rust[k][1]:>7.0f} {fv[k][1]:>7.0f}")
PYEOF
