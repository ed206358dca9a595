#!/usr/bin/env bash
# The whole journey on the bundled corpus: preprocess (phonemes), a short `tiny` training run on the
# CPU, one sentence to a wav, and the health report of the validation split: alignment scores and, when
# the recognizer is installed (pip install -e ".[bench]"), what it understood of each synthesized line.
# Usage: bash scripts/demo.sh [OUT_DIR] [TRAIN_STEPS]   (6-11 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo}
steps=${2:-400}

# 10 held-out lines: enough to hear what the model can and cannot say, few enough to score quickly
taco preprocess corpus/ljspeech_flite "$out/store" --text phonemes --val-count 10 --quiet
# --stop-at, not --max-steps: the first 400 steps of tiny's 3000-step schedule learn at its full rate, where
# a schedule decayed over 400 steps leaves 9 of 10 lines' alignments diffuse (docs/benchmarks.md, session 13)
if ls "$out"/run/checkpoints/step_*.pt > /dev/null 2>&1; then
  taco train "$out/store" "$out/run" --resume --stop-at "$steps" --device cpu   # a second run goes on
else
  taco train "$out/store" "$out/run" --config tiny --stop-at "$steps" --device cpu
fi
checkpoint=$(ls "$out"/run/checkpoints/step_*.pt | tail -n 1)
taco synth "$checkpoint" "Printing, in the only sense with which we are at present concerned." -o "$out/hello.wav"
if python -c "import pocketsphinx" 2> /dev/null; then
  taco inspect-alignment "$checkpoint" --store "$out/store" --split val --asr -o "$out/report"
else
  echo "(pip install -e '.[bench]' to hear what a recognizer understands of each line)"
  taco inspect-alignment "$checkpoint" --store "$out/store" --split val -o "$out/report"
fi

echo
echo "files written:"
find "$out" -type f -not -path "*/store/shards/*" -not -path "*/report/*.wav" -not -path "*/recordings/*" | sort
