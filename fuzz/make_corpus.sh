#!/bin/sh
# Builds the seed corpus of the `decode` fuzz target from the test fixtures (not committed):
# the golden images (except the 427 KB 06_large.png) and every format fixture, plus a few
# truncated copies of the golden JPEGs and PNGs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fixtures="$here/../tests/fixtures"
out="$here/corpus/decode"
mkdir -p "$out"
for f in "$fixtures"/golden/images/*.jpg "$fixtures"/golden/images/*.png "$fixtures"/formats/*; do
    name=$(basename "$f")
    case "$name" in
        *.json | 06_large.png) continue ;;
    esac
    cp "$f" "$out/$name"
done
for f in "$fixtures"/golden/images/00_chelsea.jpg "$fixtures"/golden/images/07_panorama.jpg \
    "$fixtures"/golden/images/05_tiny.png "$fixtures"/golden/images/04_astronaut_P.png; do
    size=$(wc -c < "$f")
    for frac in 2 3; do
        head -c $((size * (frac - 1) / frac)) "$f" > "$out/trunc_${frac}_$(basename "$f")"
    done
done
echo "seed corpus: $(ls "$out" | wc -l) files in $out"
