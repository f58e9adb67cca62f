#!/usr/bin/env bash
# Prepares, on the CPU machine, everything the one GPU call needs, in one folder (default `.gpu/`,
# git-ignored; name it in the device call's `carry`):
#
#   .gpu/fungi.xz              the fungi CLI with CUDA (and flex) compiled in, stripped, xz-compressed
#   .gpu/vits16_state.safetensors, .gpu/vits16_features.npy
#                              the real-size parity reference: ViT-S/16 with deterministic
#                              synthetic weights (`fungi synthetic-weights`), KL + DINO + SimCLR on
#                              the 8 golden images, computed here on the CPU (flex, f32)
#   .gpu/wheels/fungivision-0.0.2-py3-none-any.whl   (pure Python; torch + timm are on the GPU machine)
#   .gpu/caches.tgz            only if a previous call brought the cubecl caches back (--caches)
#   .gpu/pack.json             what was packed (sizes, sha256, CUDA version, commit)
#
# and refuses to finish when what would travel (the repository's files + .gpu) exceeds 64 MiB.
#
#   scripts/gpu-pack.sh                        # builds target/cuda/release/fungi (~10 min on 2 cores)
#   scripts/gpu-pack.sh --fungi target/release/fungi --no-wheel   # any prebuilt binary (CI: flex only)
#   scripts/gpu-pack.sh --caches caches.tgz    # reuse the compiled-kernel / autotune caches of a call
#
# The CUDA build goes to its own target dir (target/cuda, or $CUDA_TARGET_DIR), so the CPU build in target/release is
# never overwritten. CUDARC_CUDA_VERSION (default 13000: the GPU machine's CUDA 13 toolkit and
# driver 580) pins the CUDA API version cudarc binds at build time; there is no nvcc here to
# detect it.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=.gpu
FUNGI=""
WHEEL=1
CACHES=""
LIMIT=$((64 * 1024 * 1024))
while (($#)); do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --fungi) FUNGI=$2; shift 2 ;;
    --no-wheel) WHEEL=0; shift ;;
    --caches) CACHES=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu-pack.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -z $FUNGI ]]; then
  export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
  echo "building the CUDA CLI (CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION) in target/cuda ..." >&2
  cargo build --release -p fungi-cli --no-default-features --features cuda,flex --target-dir "${CUDA_TARGET_DIR:-target/cuda}"
  FUNGI=${CUDA_TARGET_DIR:-target/cuda}/release/fungi
fi
[[ -x $FUNGI ]] || { echo "gpu-pack.sh: $FUNGI is not an executable" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The binary: stripped, then xz (Python's lzma unpacks it on the GPU machine).
cp "$FUNGI" "$work/fungi"
strip "$work/fungi" 2>/dev/null || true
python3 - "$work/fungi" "$OUT/fungi.xz" <<'EOF'
import lzma, sys
with open(sys.argv[1], "rb") as f, lzma.open(sys.argv[2], "wb", preset=6) as g:
    g.write(f.read())
EOF

# The real-size parity reference, computed here on the CPU with the same binary (flex).
"$work/fungi" synthetic-weights --arch dino_vits16 --seed 0 --out "$work/vits16.safetensors"
"$work/fungi" --device flex extract --weights "$work/vits16.safetensors" --arch dino_vits16 \
  --images tests/fixtures/golden/images --config scripts/gpu-parity.toml \
  --save-state "$OUT/vits16_state.safetensors" --out "$work/ref" 2>"$work/ref.log" \
  || { cat "$work/ref.log" >&2; exit 1; }
cp "$work/ref/features.npy" "$OUT/vits16_features.npy"

if ((WHEEL)); then
  python3 -m pip download -q --no-deps fungivision==0.0.2 -d "$OUT/wheels"
fi
if [[ -n $CACHES ]]; then
  cp "$CACHES" "$OUT/caches.tgz"
fi

python3 - "$OUT" "$FUNGI" "$LIMIT" <<'EOF'
import hashlib, json, os, pathlib, subprocess, sys
out, fungi, limit = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
tree = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True,
                      check=True).stdout.split(b"\0")
tree_bytes = sum(os.path.getsize(p) for p in tree if p and os.path.isfile(p))
total = tree_bytes + sum(files.values())
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
pack = dict(commit=commit, fungi=fungi,
            fungi_sha256=hashlib.sha256(pathlib.Path(fungi).read_bytes()).hexdigest(),
            cudarc_cuda_version=os.environ.get("CUDARC_CUDA_VERSION"),
            files=files, tree_bytes=tree_bytes, total_bytes=total, limit_bytes=limit)
(out / "pack.json").write_text(json.dumps(pack, indent=2) + "\n")
print(f"packed {out}: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in files.items())
      + f"; with the repository {total / 2**20:.1f} MiB of {limit / 2**20:.0f} MiB")
if total > limit:
    sys.exit(f"gpu-pack.sh: {total / 2**20:.1f} MiB would travel, over the device's {limit / 2**20:.0f} MiB: "
             "nothing to send like this")
EOF
