#!/usr/bin/env bash
# The whole journey on the bundled corpus: preprocess, a short `tiny` training run on the CPU,
# one sentence to a wav, and the alignment health report of the validation split.
# Usage: bash scripts/demo.sh [OUT_DIR] [TRAIN_STEPS]   (3-5 minutes on 2 cores, 11 on a slower VM)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo}
steps=${2:-300}

taco preprocess corpus/ljspeech_flite "$out/store" --quiet
if ls "$out"/run/checkpoints/step_*.pt > /dev/null 2>&1; then
  taco train "$out/store" "$out/run" --resume --max-steps "$steps" --device cpu   # a second run goes on
else
  taco train "$out/store" "$out/run" --config tiny --max-steps "$steps" --device cpu
fi
checkpoint=$(ls "$out"/run/checkpoints/step_*.pt | tail -n 1)
taco synth "$checkpoint" "Printing, in the only sense with which we are at present concerned." -o "$out/hello.wav"
taco inspect-alignment "$checkpoint" --store "$out/store" --split val -o "$out/alignment"

echo
echo "files written:"
find "$out" -type f -not -path "*/store/shards/*" | sort
