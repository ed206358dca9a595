"""How fast `tiny` learns to align on the bundled corpus, on this machine's CPU.

    python benchmarks/alignment.py [--minutes 20] [--eval-every 100] [--config tiny] [--corpus DIR] [--out DIR]

Trains the `tiny` preset (or `--config`) with `taco.train` on a store of corpus/ljspeech_flite (or `--corpus`), in
pieces of `--eval-every` steps (`stop_at`; each piece resumes the last exactly, the learning-rate schedule
is the config's), until
the training time reaches `--minutes`. After each chunk it scores the validation split with
`taco.inspect` and prints a row: steps, training minutes, the last training loss, the validation loss of
the last epoch, and the focus rate (the mean over utterances of the mean over decoder steps of the
largest attention weight; FastSpeech, Ren et al. 2019), teacher-forced and free-running, with the
free-running verdicts, and beside them the word error rate of pocketsphinx on the same lines, teacher-forced
and free-running (taco.pipeline.intelligibility; needs pip install -e '.[bench]'). Before the table: the
recognizer's WER on the recordings and on Griffin-Lim of their stored mels, the floor the model can reach.
Training minutes exclude the scoring; the total wall time is printed at the end.

Targets: the model's free-running WER within 1.5x of the recordings' after 20 training minutes, with every
validation line stopping on its own gate (#13); the first evaluation at or past 20 minutes is scored with 3
seeds of the prenet's inference dropout, whose mean is the figure (one seed moves it by up to 0.1). And a
teacher-forced focus rate of at least 0.5, with a visibly diagonal plot, within 20 minutes (#4). Training
ends at `--minutes` or at the end of the config's schedule (max_steps), whichever comes first. The plots
of the last evaluation are in OUT/alignment_STEP/.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from taco.features.preprocess import preprocess
from taco.features.text import FRONT_END_TABLES, TextConfig
from taco.pipeline.asr import Recognizer
from taco.pipeline.inspect import inspect
from taco.pipeline.intelligibility import SOURCES, evaluate_intelligibility, evaluate_seeds
from taco.pipeline.presets import load_config
from taco.pipeline.train import train

from report import describe_machine, verdict

BUNDLED_CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "ljspeech_flite"
TARGET_FOCUS_RATE = 0.5
TARGET_MINUTES = 20.0
TARGET_WER_RATIO = 1.5
TARGET_SEEDS = 3


def evaluate(checkpoint: Path, store: Path, out: Path, recognizer: Recognizer, sources: tuple[str, ...]) -> dict:
    """Mean focus rates, verdict counts and the recognizer's WER of `sources` on the validation split."""
    report = inspect(checkpoint, out, store_dir=store, split="val", worst_plotted=2, device="cpu")
    intelligibility = evaluate_intelligibility(checkpoint, store, sources=sources, device="cpu", recognizer=recognizer)
    return {
        "focus_free": float(np.mean([row["scores"]["focus_rate"] for row in report])),
        "focus_forced": float(np.mean([row["teacher_forced"]["focus_rate"] for row in report])),
        "verdicts": Counter(row["verdict"] for row in report),
        "utterances": len(report),
        "wer": intelligibility["wer"],
        "hit_step_limit": intelligibility["hit_step_limit"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=TARGET_MINUTES, help="training time budget")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    parser.add_argument("--config", default="tiny", help="preset or JSON config file")
    parser.add_argument("--corpus", type=Path, default=BUNDLED_CORPUS, help="corpus in LJSpeech layout")
    parser.add_argument("--text", choices=sorted(FRONT_END_TABLES), default="phonemes",
                        help="text front end of the store (phonemes, as the README's intelligibility table)")
    parser.add_argument("--val-count", type=int, default=15, help="validation lines, scored at each evaluation")
    parser.add_argument("--out", type=Path, default=Path("benchmark-alignment"), help="store, run and plots go here")
    args = parser.parse_args()

    store, run = args.out / "store", args.out / "run"
    recognizer = Recognizer()  # first: without pocketsphinx the benchmark stops before training
    preprocess(args.corpus, store, text=TextConfig(front_end=args.text), val_count=args.val_count, progress=False)
    model_config, train_config = load_config(args.config)
    print(f"{describe_machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"config {args.config}: reduction factor {model_config.reduction_factor}, batch_frames "
          f"{train_config.batch_frames}, guided attention weight {train_config.guided_attention_weight} "
          f"(half-life {train_config.guided_attention_half_life} steps)")

    started, training_seconds, steps, reached, at_target = time.perf_counter(), 0.0, 0, None, None
    while training_seconds < args.minutes * 60:
        steps += args.eval_every
        chunk_start = time.perf_counter()
        # pieces of one run: stop_at keeps the learning-rate schedule of the config's max_steps
        if steps == args.eval_every:
            summary = train(store, run, model_config, train_config, stop_at=steps, device="cpu", progress=False)
        else:
            summary = train(store, run, resume=True, stop_at=steps, device="cpu", progress=False)
        training_seconds += time.perf_counter() - chunk_start
        # the recordings and their Griffin-Lim do not change with training: recognized once, at the start
        first = steps == args.eval_every
        sources = SOURCES if first else ("teacher_forced", "free_running")
        scores = evaluate(Path(summary["checkpoint"]), store, args.out / f"alignment_{steps:05d}", recognizer, sources)
        if first:
            floor = scores["wer"]["recordings"]
            print(f"pocketsphinx WER on the {scores['utterances']} validation lines: recordings "
                  f"{floor:.3f}, Griffin-Lim of their stored mels "
                  f"{scores['wer']['target_griffin_lim']:.3f}\n")
            print("| steps | train min | train loss | val loss | focus rate (teacher-forced) | focus rate (free-running) "
                  "| WER (teacher-forced) | WER (free-running) | free-running verdicts |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        val = summary["last_val_loss"]["total"] if summary["last_val_loss"] else float("nan")
        verdicts = ", ".join(f"{verdict} {count}" for verdict, count in scores["verdicts"].most_common())
        print(f"| {steps} | {training_seconds / 60:.1f} | {summary['last_loss']['total']:.3f} | {val:.3f} | "
              f"{scores['focus_forced']:.3f} | {scores['focus_free']:.3f} | {scores['wer']['teacher_forced']:.3f} | "
              f"{scores['wer']['free_running']:.3f} | {verdicts} |", flush=True)
        if reached is None and scores["focus_forced"] >= TARGET_FOCUS_RATE:
            reached = (steps, training_seconds / 60)
        if at_target is None and training_seconds >= TARGET_MINUTES * 60:
            at_target = score_seeds(Path(summary["checkpoint"]), store, recognizer, scores)
            at_target.update(steps=steps, minutes=training_seconds / 60)
        if summary["stopped_by"] == "max_steps":
            break

    print(f"\ntotal wall time {(time.perf_counter() - started) / 60:.1f} min (training {training_seconds / 60:.1f})")
    if reached:
        print(f"target focus rate >= {TARGET_FOCUS_RATE} (teacher-forced): reached at step {reached[0]}, "
              f"{reached[1]:.1f} training minutes: {verdict(reached[1] <= TARGET_MINUTES)}")
    else:
        print(f"target focus rate >= {TARGET_FOCUS_RATE} (teacher-forced): not reached: {verdict(False)}")
    if at_target:
        limit = TARGET_WER_RATIO * floor
        print(f"target free-running WER <= {TARGET_WER_RATIO}x the recordings' ({limit:.3f}) after {TARGET_MINUTES:.0f} "
              f"minutes, every line stopping on its gate: at step {at_target['steps']} ({at_target['minutes']:.1f} min) "
              f"{at_target['wer']:.3f} (seeds {' / '.join(f'{wer:.3f}' for wer in at_target['by_seed'])}), "
              f"{at_target['hit_step_limit']} lines at the step limit: "
              f"{verdict(at_target['wer'] <= limit and at_target['hit_step_limit'] == 0)}")
    else:
        print(f"target free-running WER after {TARGET_MINUTES:.0f} minutes: not measured (the run ended before)")
    print(f"plots: {args.out}/alignment_{steps:05d}/ and {run}/plots/")
    (args.out / "result.json").write_text(json.dumps({"reached": reached, "steps": steps}) + "\n")


def score_seeds(checkpoint: Path, store: Path, recognizer: Recognizer, seed_0: dict) -> dict:
    """Free-running WER of `checkpoint` as the mean over TARGET_SEEDS seeds of the prenet's dropout
    (`seed_0`: evaluate's scores, made with seed 0), and the lines that hit the step limit in any seed."""
    runs = evaluate_seeds(checkpoint, store, TARGET_SEEDS, sources=("free_running",), first=seed_0, device="cpu",
                          recognizer=recognizer)
    by_seed = [run["wer"]["free_running"] for run in runs]
    return {"wer": float(np.mean(by_seed)), "by_seed": by_seed,
            "hit_step_limit": max(run["hit_step_limit"] for run in runs)}


if __name__ == "__main__":
    main()
