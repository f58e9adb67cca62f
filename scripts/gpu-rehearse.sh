#!/usr/bin/env bash
# The GPU call rehearsed on the CPU, end to end: pack (scripts/gpu-pack.sh), copy exactly what
# would travel (the repository's tracked and unignored files + .gpu) to another path, run
# scripts/gpu-check.sh there with --device flex and $OUT set, then check that $OUT holds what the
# device tool brings back: at most 8 files, each at most 16 MiB, at most 2 folders deep, plain
# names, and a summary whose parity steps passed.
#
#   scripts/gpu-rehearse.sh --fungi target/release/fungi            # any binary with flex (CI)
#   PYTHON=venv/bin/python scripts/gpu-rehearse.sh --fungi ... --full   # + fungivision on CPU torch
#
# --fungi is passed to gpu-pack.sh (without it, the CUDA+flex CLI is built, ~10 min).
set -euo pipefail
cd "$(dirname "$0")/.."
FUNGI=()
FULL=0
while (($#)); do
  case $1 in
    --fungi) FUNGI=(--fungi "$2"); shift 2 ;;
    --full) FULL=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu-rehearse.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
base=$(realpath -m "${REHEARSAL_DIR:-$(mktemp -d)}")
pack=(--no-wheel)
((FULL)) && pack=()
scripts/gpu-pack.sh "${FUNGI[@]}" --out .gpu "${pack[@]}"
rm -rf "$base/repo" "$base/out"
mkdir -p "$base/repo" "$base/out"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$base/repo"
cp -r .gpu "$base/repo/.gpu"
args=(--device flex --archs dino_vits16 --batches 1 --iters 1 --budget 400 --work "$base/work")
((FULL)) || args+=(--skip fungivision)
( cd "$base/repo" && OUT="$base/out" scripts/gpu-check.sh "${args[@]}" ) || status=$?
python3 - "$base/out" <<'PY'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
files = [p for p in out.rglob("*") if p.is_file()]
problems = []
if len(files) > 8:
    problems.append(f"{len(files)} files (at most 8 come back)")
for p in files:
    rel = p.relative_to(out)
    if p.stat().st_size > 16 * 2**20:
        problems.append(f"{rel}: {p.stat().st_size / 2**20:.1f} MiB (at most 16)")
    if len(rel.parts) > 3:
        problems.append(f"{rel}: more than 2 folders down")
    if not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts):
        problems.append(f"{rel}: a name the device tool does not bring back")
s = json.loads((out / "summary.json").read_text())
for name, step in s["steps"].items():
    if step["status"] == "failed":
        problems.append(f"step {name} failed: {step.get('error', step)}")
for need in ("probe", "golden_embed_f32", "golden_extract_f32", "vits16_extract_f32", "bench_dino_vits16_f32"):
    if s["steps"].get(need, {}).get("status") != "ok":
        problems.append(f"step {need}: {s['steps'].get(need, {}).get('status', 'missing')}")
print(f"$OUT: {', '.join(f'{p.relative_to(out)} ({p.stat().st_size / 1024:.0f} KiB)' for p in sorted(files))}")
if problems:
    sys.exit("rehearsal: " + "; ".join(problems))
print("rehearsal: the GPU call's $OUT layout and steps hold on the CPU")
PY
exit "${status:-0}"
