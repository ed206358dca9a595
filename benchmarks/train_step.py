"""Training step and inference step time of Tacotron2, today's model against a baseline revision of it.

    python benchmarks/train_step.py [--baseline REV] [--device cpu|cuda] [--threads T] [--batch B]
                                    [--frames F] [--tokens N] [--repeat R] [--configs tiny base-r1 base-r2]

The baseline is `taco/pipeline/model.py` as it was at git revision REV (default: the last commit before
#15's decoder changes), loaded from `git show` into this process beside today's `taco.pipeline.model`; both
get the same weights (the parameter names did not change) and the same batch, so the table compares code,
not machines or moments.

One fixed batch: B items of N random tokens and F random mel frames (every item full length, so padding
plays no part), random weights, seed 0. For each configuration (`tiny` at its r=3, `base` at r=1 and r=2):

1. Training step: zero_grad, teacher-forced forward (under bf16 autocast on CUDA, as `taco train`), a loss
   over the decoder and postnet mels (MSE) and the gate (BCE with logits), backward, Adam step. Time per
   step and mel frames per second (B x F / step time): the metric of NVIDIA's DeepLearningExamples
   Tacotron2 training table (batch 128: A100 31,499 mels/s TF32 and 26,484 AMP; V100 AMP 15,891).
2. Inference per decoder step: `infer` of the first item alone (batch 1, as `taco synth` of one line) for
   F / r steps, the gate layer set never to fire (weights 0, bias -1e4), time over steps. On the CPU also
   today's model with the decoder's LSTMs in int8 (`taco synth --int8`).

Timings are the best of R rounds; the rounds alternate baseline and today's code, so a busy moment on the
machine does not land on one of them only; each is run once untimed first. On CUDA each timing ends with
`torch.cuda.synchronize()`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

# python puts benchmarks/ on the path, not the root: without the root, `taco` would be whichever checkout
# `pip install -e` points at, and the table would time that one instead of this one
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from report import describe_machine, load_average, print_table, verdict  # noqa: E402
from synthesis import gate_never_fires  # noqa: E402

from taco.pipeline import model as current_model  # noqa: E402
from taco.pipeline.synth import int8_decoder_lstms  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINE_REV = "a5fc703"  # main before the decoder step was reworked for #15
CONFIGS = {"tiny": ("tiny", 3), "base-r1": ("base", 1), "base-r2": ("base", 2)}
TARGET_SPEED_UP = 1.3  # issue #15, both for the training step and the inference step on 2 CPU cores
N_SYMBOLS = 124  # taco's phoneme symbol table; the embedding's size hardly matters to the time


def load_baseline(rev: str, folder: Path):
    """taco/pipeline/model.py at `rev` as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:taco/pipeline/model.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "baseline_model.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def build(module, preset: str, r: int, weights: dict | None, device: torch.device):
    config = current_model.PRESETS[preset].to_dict() | {"reduction_factor": r, "n_symbols": N_SYMBOLS}
    # fields added since the baseline (recognizer_channels, off by default) are unknown to its ModelConfig
    known = {field.name for field in dataclasses.fields(module.ModelConfig)}
    config = {name: value for name, value in config.items() if name in known}
    model = module.Tacotron2(module.ModelConfig.from_dict(config)).to(device)
    if weights is not None:
        model.load_state_dict(weights)
    return model


def make_batch(batch: int, tokens: int, frames: int, n_mels: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    gate = torch.zeros(batch, frames)
    gate[:, -1] = 1.0
    return {
        "tokens": torch.randint(1, N_SYMBOLS, (batch, tokens), generator=generator).to(device),
        "token_lens": torch.full((batch,), tokens, device=device),
        "mels": torch.randn(batch, frames, n_mels, generator=generator).to(device),
        "mel_lens": torch.full((batch,), frames, device=device),
        "gate": gate.to(device),
    }


def timed(device: torch.device, work) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def training_step(model, optimizer, batch: dict, r: int, device: torch.device):
    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"])
        gate_targets = batch["gate"][:, r - 1 :: r]
        loss = (F.mse_loss(out.mels.float(), batch["mels"]) + F.mse_loss(out.mels_postnet.float(), batch["mels"])
                + F.binary_cross_entropy_with_logits(out.gate_logits.float(), gate_targets))
        loss.backward()
        optimizer.step()
    return step


def inference_steps(model, batch: dict, steps: int):
    gate_never_fires(model)
    model.eval()
    return lambda: model.infer(batch["tokens"][:1], batch["token_lens"][:1], max_decoder_steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision of the baseline model.py")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=120, help="mel frames per item (a multiple of 6)")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per item")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(describe_machine())
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch} x {args.frames} frames "
          f"x {args.tokens} tokens, baseline {args.baseline}, best of {args.repeat}; load average {load_average()}")
    with tempfile.TemporaryDirectory() as folder:
        baseline_module = load_baseline(args.baseline, Path(folder))
        rows = []
        for name in args.configs:
            preset, r = CONFIGS[name]
            torch.manual_seed(0)
            current = build(current_model, preset, r, None, device)
            baseline = build(baseline_module, preset, r, current.state_dict(), device)
            batch = make_batch(args.batch, args.tokens, args.frames, current.config.n_mels, device)
            work = {}
            for label, model in (("baseline", baseline), ("today", current)):
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
                work[label, "train"] = training_step(model, optimizer, batch, r, device)
            inference_models = [("baseline", baseline), ("today", current)]
            if device.type == "cpu":
                int8 = copy.deepcopy(current)
                int8_decoder_lstms(int8)
                inference_models.append(("int8", int8))
            for label, model in inference_models:
                work[label, "infer"] = inference_steps(model, batch, args.frames // r)
            for job in work.values():
                job()  # untimed: allocator, thread pool and kernel selection warm up
            best = {key: float("inf") for key in work}
            for _ in range(args.repeat):
                for key, job in work.items():
                    best[key] = min(best[key], timed(device, job))
            frames = args.batch * args.frames
            train_speed_up = best["baseline", "train"] / best["today", "train"]
            infer_speed_up = best["baseline", "infer"] / best["today", "infer"]
            step_ms = {label: best[label, "infer"] / (args.frames // r) * 1e3 for label, _ in inference_models}
            rows += [
                (f"{name} training step, baseline", f"{best['baseline', 'train']:.2f} s, "
                 f"{frames / best['baseline', 'train']:,.0f} mels/s", "", ""),
                (f"{name} training step, today", f"{best['today', 'train']:.2f} s, "
                 f"{frames / best['today', 'train']:,.0f} mels/s", "", ""),
                (f"{name} training speed-up", f"{train_speed_up:.2f}x", f">= {TARGET_SPEED_UP}x",
                 verdict(train_speed_up >= TARGET_SPEED_UP)),
                (f"{name} inference per decoder step", f"{step_ms['baseline']:.2f} -> {step_ms['today']:.2f} ms",
                 "", ""),
                (f"{name} inference speed-up", f"{infer_speed_up:.2f}x", f">= {TARGET_SPEED_UP}x",
                 verdict(infer_speed_up >= TARGET_SPEED_UP)),
            ]
            if "int8" in step_ms:
                int8_speed_up = best["baseline", "infer"] / best["int8", "infer"]
                rows += [
                    (f"{name} inference per decoder step, int8 LSTMs", f"{step_ms['int8']:.2f} ms", "", ""),
                    (f"{name} inference speed-up, int8 LSTMs", f"{int8_speed_up:.2f}x", f">= {TARGET_SPEED_UP}x",
                     verdict(int8_speed_up >= TARGET_SPEED_UP)),
                ]
            print(f"{name} done; load average {load_average()}", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
