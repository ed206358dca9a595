"""Can a checkpoint's speech be understood? pocketsphinx's word error rate on a store's validation lines.

    python benchmarks/intelligibility.py CHECKPOINT --store STORE [--corpus DIR] [--limit N] [--seeds N] [--device cpu] [--int8]

Prints a markdown table of the word error rate of the same sentences from four sources (see
taco.pipeline.intelligibility): the recordings, Griffin-Lim of the stored target mels, the checkpoint's
teacher-forced postnet mels and its free-running synthesis, all vocoded as `taco synth` does; then the
mean duration of the free-running lines over the recordings', how many hit the decoder's step limit, and
the reference words the recognizer cannot know. The recordings' WER is the floor the model can reach.
The prenet's dropout stays on at inference, so the model's two rows change with the seed: on 15 lines
free-running WER moved by up to 0.1 between seeds. `--seeds N` scores them with N seeds and prints the mean.
Needs pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from taco.pipeline.asr import Recognizer
from taco.pipeline.intelligibility import evaluate_intelligibility, evaluate_seeds, format_intelligibility

from report import describe_machine, load_average


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--store", type=Path, required=True, help="the feature store whose validation lines are read")
    parser.add_argument("--corpus", type=Path, default=None, help="the store's corpus (default: the one store.json records)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many validation lines")
    parser.add_argument("--seeds", type=int, default=1, help="score the model's rows with seeds 0..N-1 and average")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--int8", action="store_true", help="the decoder's LSTMs in int8, as taco synth --int8")
    args = parser.parse_args()

    started = time.perf_counter()
    recognizer = Recognizer()
    result = evaluate_intelligibility(args.checkpoint, args.store, corpus_dir=args.corpus, limit=args.limit,
                                      device=args.device, recognizer=recognizer, progress=True, int8=args.int8)
    print(f"{describe_machine()}; torch {torch.__version__}")
    print(f"{args.checkpoint} on {result['utterances']} validation lines of {args.store} "
          f"({result['words']} words), Griffin-Lim as taco synth, pocketsphinx\n")
    print(format_intelligibility(result))
    if args.seeds > 1:
        model_rows = ("teacher_forced", "free_running")
        by_seed = [run["wer"] for run in evaluate_seeds(
            args.checkpoint, args.store, args.seeds, sources=model_rows, first=result, corpus_dir=args.corpus,
            limit=args.limit, device=args.device, recognizer=recognizer, int8=args.int8)]
        print(f"\n| seed | {' | '.join(model_rows)} |\n| ---: |{' ---: |' * len(model_rows)}")
        for seed, wer in enumerate(by_seed):
            print(f"| {seed} | {' | '.join(f'{wer[source]:.3f}' for source in model_rows)} |")
        means = [sum(wer[source] for wer in by_seed) / len(by_seed) for source in model_rows]
        print(f"| mean | {' | '.join(f'{mean:.3f}' for mean in means)} |")
    print(f"\n{time.perf_counter() - started:.0f} s in all; load average {load_average()}")


if __name__ == "__main__":
    main()
