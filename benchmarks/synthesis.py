"""Synthesis speed on CPU: real-time factor, batched against one-by-one, and taco's Griffin-Lim against librosa's.

    python benchmarks/synthesis.py [--threads T] [--repeat R] [--base-one-by-one N] [--vocoder-repeat V]
                                   [--vocoders-only]

Everything runs in this process on the CPU with `torch.set_num_threads(T)` (default: every usable core),
on the first 16 usable lines of the bundled corpus/ljspeech_flite/metadata.csv (real English sentences).

The models have random weights: `Tacotron2(PRESETS[name])` for `tiny` and `base`, with n_symbols from taco's
symbol table, the default FeatureConfig and TextConfig, saved with `save_checkpoint` into a temporary folder
and loaded by `Synthesizer(path, device="cpu")`, as `taco synth` loads a trained one. Random weights do not
stop where speech would (a random gate may fire at the first step, or never), so the gate layer is set to
never fire (weights 0, bias -1e4: the same matrix product, a constant logit) and every length comes from
`SynthConfig.max_decoder_steps`, nothing monkeypatched. Each line gets the length a reader would take:
its spoken characters (token ids less EOS) at 14 per second, so steps = ceil(seconds * 22050 / 256 / r).

1. Real-time factor (RTF): wall seconds of one `Synthesizer.synthesize(16 lines, SynthConfig(batch_size=16,
   max_decoder_steps=the longest line's steps))` over the seconds of audio the 16 lines are planned to have,
   with `vocode=False` (model only: text front end, encoder, decoder loop, postnet) and `vocode=True` (model
   + Griffin-Lim at the default SynthConfig: 32 iterations, power 1.0). A batch decodes until its last item
   stops, and on a CPU Griffin-Lim runs on each item at its own length, which here is the batch's longest
   (the gate never fires): the decoder's work is that of a trained model whose lines stop at the planned
   lengths, Griffin-Lim's an upper bound (see 4); the audio counted is the planned lengths, not the padded ones.
2. Batched against one-by-one, model + Griffin-Lim: the batch-16 call above, and each line in its own
   `synthesize([line], SynthConfig(batch_size=1, max_decoder_steps=its steps))`, summed over the lines.
   Time per line, and the speed-up as the ratio of their RTFs (time per second of audio), which is the
   ratio of times per line when both cover the same lines. `base` one-by-one is the slow part (about 6 ms a
   decoder step, 86 steps a second of audio: 38 s for the 16 lines, of a whole run of about 3.5 minutes on
   2 idle cores); `--base-one-by-one N` runs it on N lines spread evenly by length instead (their mean
   length is printed beside the 16 lines' mean).
3. Griffin-Lim alone on one real clip (the first of the corpus between 4 and 6 s): its magnitude
   (`taco.features.mel.magnitude_stft`, float64, passed to both as float32) through
   `taco.pipeline.griffin_lim.griffin_lim` (torch, T threads and 1 thread) and `librosa.griffinlim` (numpy
   FFT, one thread); both 32 iterations, momentum 0.99, n_fft 1024, hop 256, win 1024, periodic Hann,
   center=True, reflect padding, random initial phase, power 1. Quality: `spectral_convergence` between that
   magnitude and the magnitude of each result recomputed the same way (0 is perfect; also shown for the
   random initial phase, 0 iterations).
4. Griffin-Lim of 16 lines of `tiny`'s planned lengths (random magnitudes, the synthesis settings): the
   padded batch in one call, as synthesis on a GPU does it, against each line alone at its own length, as
   synthesis on a CPU does it.

5. HiFi-GAN against Griffin-Lim on the same 16 lengths: the public V1 and V3 generators (their configs from
   tests/data/hifigan_generators.json, the manifest of the reference's configs; random weights, which cost
   what trained ones do), `Vocoder.vocode_each` on random log mels (normal, mean -5, sd 2) of those frames,
   batch 16 (mels padded to the longest, plus the silent tail) and batch 1, and in bfloat16 (`--half`) at
   batch 1 where the CPU has it natively (AVX-512 BF16 or AMX; its header line says). RTF = seconds / audio seconds
   (frames x hop for HiFi-GAN, (frames - 1) x hop for Griffin-Lim). V1 takes a minute or two a run on 2
   cores, so these run in the first V rounds only (`--vocoder-repeat`, default 1); `--vocoders-only` skips
   the Tacotron2 and librosa measurements (1-3 and the clip of 4).

Timings are the best of R runs. The measurements take turns, R rounds of all of them, so that a busy moment
on the machine does not land on one of them only. Each configuration is run once, untimed, before the rounds.
Another process holding a core ruins T-thread timings (torch's threads wait for each other), so the
header prints the load average and a probe: a 512 x 512 matmul at 1 and at T threads, before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile
import torch

from taco.features.audio import load_audio
from taco.features.corpus import Entry, read_metadata
from taco.features.mel import FeatureConfig, magnitude_stft
from taco.features.text import TextConfig, encode, symbols
from taco.pipeline.checkpoint import save_checkpoint
from taco.pipeline.griffin_lim import (DEFAULT_ITERATIONS, DEFAULT_MOMENTUM, griffin_lim, griffin_lim_lines,
                                       spectral_convergence)
from taco.pipeline.model import PRESETS, Tacotron2
from taco.pipeline.hifigan import Generator, HiFiGANConfig
from taco.pipeline.synth import SynthConfig, Synthesizer
from taco.pipeline.vocoder import Vocoder, cpu_has_bfloat16

from report import describe_machine, describe_times, load_average, print_table, verdict

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "ljspeech_flite"
HIFIGAN_MANIFEST = Path(__file__).resolve().parents[1] / "tests" / "data" / "hifigan_generators.json"
HIFIGAN_VERSIONS = ("v1", "v3")
DEFAULT_VOCODER_REPEAT = 1
# Random log mels for HiFi-GAN: about the mean and spread of speech's natural-log mel bins.
LOG_MEL_MEAN, LOG_MEL_SD = -5.0, 2.0
N_LINES = 16
BATCH_SIZE = SynthConfig().batch_size
PRESET_NAMES = ("tiny", "base")
DEFAULT_REPEAT = 3
# base one-by-one runs on this many of the lines (spread evenly by length); all of them unless told otherwise
DEFAULT_BASE_ONE_BY_ONE = N_LINES
# Speaking rate of the planned lengths. The bundled flite corpus says 14.0 characters of text a second
# (its 300 lines, 20.7 minutes); LJSpeech's reader 15.2 (its README: 1,308,674 characters in 23:55:17).
CHARACTERS_PER_SECOND = 14.0
# The Griffin-Lim clip: the first corpus clip of this many seconds (the issue asks for 4 to 6 s).
CLIP_SECONDS = (4.0, 6.0)
# The contention probe: a square matmul of this size, best of PROBE_REPEAT.
PROBE_SIZE = 512
PROBE_REPEAT = 20
# A probe speed-up below this at T > 1 threads means a core is taken (measured on the 2-core machine: 2.6 ms
# at 1 thread; at 2 threads 1.3 ms when idle, 16 ms while a training run held the other core).
CONTENDED_SPEEDUP = 1.2

# Targets from the issue.
TARGET_RTF = 0.5  # base + Griffin-Lim, batch 16, on 2 cores
TARGET_BATCH_SPEEDUP = 4.0  # batch 16 per line against batch 1 per line
TARGET_V1_RTF = 1.0  # HiFi-GAN V1 on 2 cores; V3 must beat Griffin-Lim at 32 iterations


# ---- lines and their planned lengths ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Line:
    text: str
    characters: int  # spoken characters: token ids less EOS

    def steps(self, features: FeatureConfig, reduction_factor: int) -> int:
        """Decoder steps that give this line CHARACTERS_PER_SECOND speech."""
        seconds = self.characters / CHARACTERS_PER_SECOND
        return math.ceil(seconds * features.sample_rate / features.hop_length / reduction_factor)


def corpus_lines(count: int, text_config: TextConfig) -> list[Line]:
    entries, _ = read_metadata(CORPUS / "metadata.csv", CORPUS / "wavs")
    lines = []
    for entry in entries[:count]:
        ids = encode(entry.text, text_config).ids
        lines.append(Line(entry.text, len(ids) - int(text_config.add_eos)))
    return lines


def audio_seconds(steps: int, reduction_factor: int, features: FeatureConfig) -> float:
    """Seconds of the wave that `steps` decoder steps give: Synthesizer keeps (frames - 1) * hop samples."""
    return (steps * reduction_factor - 1) * features.hop_length / features.sample_rate


def spread_by_length(lines: list[Line], count: int) -> list[int]:
    """Indices of `count` lines taken evenly through the lines sorted by length (from the middle of each share)."""
    order = sorted(range(len(lines)), key=lambda i: lines[i].characters)
    share = len(lines) / count
    return [order[int(share * k + share / 2)] for k in range(count)]


# ---- checkpoints ----------------------------------------------------------------------------------

def gate_never_fires(model: Tacotron2) -> None:
    """Weights 0 and bias -1e4 (the same matrix product, a constant logit that never reaches the 0.5
    threshold): every length is then set by max_decoder_steps alone."""
    with torch.no_grad():
        model.decoder.gate_layer.weight.zero_()
        model.decoder.gate_layer.bias.fill_(-1e4)


def random_checkpoint(preset: str, directory: Path) -> Path:
    """A checkpoint of `PRESETS[preset]` with random weights and a gate that never fires."""
    features, text = FeatureConfig(), TextConfig()
    table = symbols(text.symbols_version)
    config = dataclasses.replace(PRESETS[preset], n_symbols=len(table), n_mels=features.n_mels)
    torch.manual_seed(0)
    model = Tacotron2(config)
    gate_never_fires(model)
    path = directory / f"{preset}.pt"
    save_checkpoint(path, {
        "model": model.state_dict(),
        "model_config": config.to_dict(),
        "feature_config": features.to_dict(),
        "text_config": text.to_dict(),
        "symbols": table,
    })
    return path


# ---- the measurements -----------------------------------------------------------------------------


def check_lengths(utterances, steps: list[int], reduction_factor: int) -> None:
    """Every line ran exactly its planned steps: the gate never fired, so the work is what we planned."""
    for utterance, planned in zip(utterances, steps):
        if not utterance.hit_step_limit or len(utterance.mel) != planned * reduction_factor:
            raise RuntimeError(f"{utterance.text!r}: {len(utterance.mel)} frames, planned {planned * reduction_factor}")


def run_batched(synth: Synthesizer, lines: list[Line], steps: list[int], vocode: bool) -> float:
    """Wall seconds of one synthesize() of all lines in batches of BATCH_SIZE, each batch cut at the longest line."""
    config = SynthConfig(batch_size=BATCH_SIZE, max_decoder_steps=max(steps))
    start = time.perf_counter()
    utterances = synth.synthesize([line.text for line in lines], config, vocode=vocode)
    seconds = time.perf_counter() - start
    check_lengths(utterances, [max(steps)] * len(lines), synth.model_config.reduction_factor)
    return seconds


def run_one_by_one(synth: Synthesizer, lines: list[Line], steps: list[int]) -> float:
    """Wall seconds of one synthesize() per line, batch size 1, each cut at its own length; summed."""
    total = 0.0
    for line, line_steps in zip(lines, steps):
        config = SynthConfig(batch_size=1, max_decoder_steps=line_steps)
        start = time.perf_counter()
        utterances = synth.synthesize([line.text], config)
        total += time.perf_counter() - start
        check_lengths(utterances, [line_steps], synth.model_config.reduction_factor)
    return total


def clip_magnitude(features: FeatureConfig) -> tuple[Entry, torch.Tensor]:
    """The first corpus clip of CLIP_SECONDS and its float64 magnitude (n_freqs, frames)."""
    entries, _ = read_metadata(CORPUS / "metadata.csv", CORPUS / "wavs")
    for entry in entries:
        if CLIP_SECONDS[0] <= soundfile.info(entry.audio_path).duration <= CLIP_SECONDS[1]:
            wave = torch.from_numpy(load_audio(entry.audio_path, features.sample_rate))
            return entry, magnitude_stft(wave.to(torch.float64), features)
    raise RuntimeError(f"{CORPUS}: no clip of {CLIP_SECONDS[0]} to {CLIP_SECONDS[1]} s")


def convergence(target: torch.Tensor, wave: torch.Tensor | np.ndarray, features: FeatureConfig) -> float:
    """Spectral convergence of a Griffin-Lim result against the magnitude it started from."""
    wave = torch.as_tensor(wave).to(torch.float64)
    return spectral_convergence(target, magnitude_stft(wave, features))


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """`threads` torch threads inside the block; the thread count before it again after, so that the next
    measurement runs at the T threads of the header."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_taco_griffin_lim(magnitude: torch.Tensor, features: FeatureConfig, threads: int) -> tuple[float, torch.Tensor]:
    with torch_threads(threads):
        start = time.perf_counter()
        wave = griffin_lim(magnitude, features, DEFAULT_ITERATIONS, DEFAULT_MOMENTUM, power=1.0, seed=0)
        return time.perf_counter() - start, wave


def run_librosa_griffin_lim(magnitude: torch.Tensor, features: FeatureConfig) -> tuple[float, np.ndarray]:
    import librosa

    start = time.perf_counter()
    wave = librosa.griffinlim(
        magnitude.numpy(),
        n_iter=DEFAULT_ITERATIONS,
        hop_length=features.hop_length,
        win_length=features.win_length,
        n_fft=features.n_fft,
        window="hann",  # scipy's periodic Hann, as taco's
        center=True,
        length=(magnitude.shape[-1] - 1) * features.hop_length,  # what taco returns
        pad_mode="reflect",  # as taco's STFT pads (librosa's default pads with zeros)
        momentum=DEFAULT_MOMENTUM,
        init="random",
        random_state=0,
    )
    return time.perf_counter() - start, wave


def run_lines_griffin_lim(magnitudes: torch.Tensor, frames: list[int], features: FeatureConfig,
                          each_alone: bool) -> float:
    """Wall seconds of `griffin_lim_lines` on (lines, n_freqs, longest) magnitudes, as synthesis calls it."""
    start = time.perf_counter()
    griffin_lim_lines(magnitudes, frames, features, each_alone, power=SynthConfig().power)
    return time.perf_counter() - start


def hifigan_vocoder(version: str, half: bool = False) -> Vocoder:
    """The public `version` generator's architecture with random weights, on the CPU (in bfloat16 if `half`)."""
    config = json.loads(HIFIGAN_MANIFEST.read_text())[version]["config"]
    torch.manual_seed(0)
    return Vocoder(Generator(HiFiGANConfig.from_reference(config)), device="cpu", half=half)


def hifigan_key(version: str, dtype: str, batch_size: int) -> str:
    return f"hifigan {version} {dtype} batch {batch_size}"


def run_hifigan(vocoder: Vocoder, log_mels: list[np.ndarray], batch_size: int) -> float:
    """Wall seconds of `Vocoder.vocode_each` on the mels, `batch_size` at a time."""
    start = time.perf_counter()
    vocoder.vocode_each(log_mels, batch_size)
    return time.perf_counter() - start


# ---- machine ----------------------------------------------------------------------------------------


def matmul_probe(threads: int) -> float:
    """Best seconds of a PROBE_SIZE square matmul at `threads` torch threads."""
    with torch_threads(threads):
        a = torch.randn(PROBE_SIZE, PROBE_SIZE)
        a @ a
        best = math.inf
        for _ in range(PROBE_REPEAT):
            start = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - start)
        return best


def probe(threads: int) -> tuple[float, str]:
    """The T-thread speed-up of the probe matmul, and a line describing it with the load average."""
    one, many = matmul_probe(1), matmul_probe(threads)
    line = (f"{PROBE_SIZE}x{PROBE_SIZE} matmul {one * 1e3:.2f} ms at 1 thread, {many * 1e3:.2f} ms at {threads}: "
            f"speed-up {one / many:.2f} (about {threads} on idle cores; near or below 1 when another process "
            f"holds a core), load average {load_average()}")
    return one / many, line


def contention_warning(speedups: list[float], threads: int) -> str | None:
    if threads > 1 and min(speedups) < CONTENDED_SPEEDUP:
        return (f"WARNING: the probe ran no faster at {threads} threads than at 1: another process holds a core, and "
                f"{threads}-thread timings are then several times slower than on idle cores. Rerun when the machine "
                f"is idle, or with --threads 1.")
    return None


# ---- report -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads T")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs of each measurement R")
    parser.add_argument("--base-one-by-one", type=int, default=DEFAULT_BASE_ONE_BY_ONE,
                        help=f"lines of the {N_LINES} that base synthesizes one by one")
    parser.add_argument("--vocoder-repeat", type=int, default=DEFAULT_VOCODER_REPEAT,
                        help="rounds (of the R) that include the HiFi-GAN measurements V")
    parser.add_argument("--vocoders-only", action="store_true",
                        help="only Griffin-Lim and HiFi-GAN on the lines' lengths, no Tacotron2, no librosa")
    args = parser.parse_args()
    if args.threads < 1 or args.repeat < 1 or not 1 <= args.base_one_by_one <= N_LINES:
        parser.error(f"--threads and --repeat must be at least 1, --base-one-by-one 1 to {N_LINES}")
    if not 1 <= args.vocoder_repeat <= args.repeat:
        parser.error("--vocoder-repeat must be 1 to --repeat")
    torch.set_num_threads(args.threads)
    features, text_config = FeatureConfig(), TextConfig()
    speedup_before, probe_before = probe(args.threads)
    warning = contention_warning([speedup_before], args.threads)
    if warning:
        print(warning, file=sys.stderr)

    lines = corpus_lines(N_LINES, text_config)
    one_by_one = {"tiny": list(range(N_LINES)), "base": sorted(spread_by_length(lines, args.base_one_by_one))}
    entry, target = clip_magnitude(features)
    magnitude = target.to(torch.float32)

    measurements: dict[str, Callable[[], float]] = {}
    planned: dict[str, dict] = {}  # preset -> steps, reduction factor
    for name in PRESET_NAMES:
        r = PRESETS[name].reduction_factor
        planned[name] = {"steps": [line.steps(features, r) for line in lines], "r": r}
    gl_waves: dict[str, object] = {}
    synths = {}
    if not args.vocoders_only:
        with tempfile.TemporaryDirectory(prefix="taco-bench-synth-") as work:
            synths = {name: Synthesizer(random_checkpoint(name, Path(work)), device="cpu") for name in PRESET_NAMES}
    for name, synth in synths.items():
        steps, subset = planned[name]["steps"], one_by_one[name]
        measurements[f"{name} model"] = lambda s=synth, st=steps: run_batched(s, lines, st, vocode=False)
        measurements[f"{name} vocoded"] = lambda s=synth, st=steps: run_batched(s, lines, st, vocode=True)
        measurements[f"{name} one by one"] = lambda s=synth, st=steps, sub=subset: run_one_by_one(
            s, [lines[i] for i in sub], [st[i] for i in sub])

    def griffin_lim_run(key: str, run: Callable[[], tuple[float, object]]) -> Callable[[], float]:
        def timed() -> float:
            seconds, gl_waves[key] = run()
            return seconds
        return timed

    if not args.vocoders_only:
        measurements["gl taco"] = griffin_lim_run(
            "gl taco", lambda: run_taco_griffin_lim(magnitude, features, args.threads))
        measurements["gl taco 1"] = griffin_lim_run(
            "gl taco 1", lambda: run_taco_griffin_lim(magnitude, features, 1))
        measurements["gl librosa"] = griffin_lim_run("gl librosa", lambda: run_librosa_griffin_lim(magnitude, features))
    line_frames = [n * planned["tiny"]["r"] for n in planned["tiny"]["steps"]]
    line_magnitudes = torch.rand(N_LINES, features.n_fft // 2 + 1, max(line_frames),
                                 generator=torch.Generator().manual_seed(0))
    measurements["gl padded"] = lambda: run_lines_griffin_lim(line_magnitudes, line_frames, features, each_alone=False)
    measurements["gl per line"] = lambda: run_lines_griffin_lim(line_magnitudes, line_frames, features, each_alone=True)
    # (version, dtype, batch size): float32 batched and one at a time; bfloat16 (`--half`) one at a time, where
    # the CPU has it natively (emulated it is 40x slower)
    variants = [(version, dtype, batch_size) for version in HIFIGAN_VERSIONS
                for dtype, batch_size in [("float32", BATCH_SIZE), ("float32", 1)] + [("bfloat16", 1)] * cpu_has_bfloat16()]
    vocoders = {(version, dtype): hifigan_vocoder(version, half=dtype == "bfloat16")
                for version, dtype, _ in variants}
    random_mels = torch.Generator().manual_seed(0)
    log_mels = [(LOG_MEL_MEAN + LOG_MEL_SD * torch.randn(features.n_mels, n, generator=random_mels)).numpy()
                for n in line_frames]
    hifigan_keys = []
    for version, dtype, batch_size in variants:
        key = hifigan_key(version, dtype, batch_size)
        measurements[key] = lambda v=vocoders[version, dtype], b=batch_size: run_hifigan(v, log_mels, b)
        hifigan_keys.append(key)

    print("warming up ...", file=sys.stderr)
    for name, synth in synths.items():
        short = [min(8, max(planned[name]["steps"]))] * N_LINES
        run_batched(synth, lines, short, vocode=True)
        run_one_by_one(synth, lines[:1], short[:1])
    for key in ("gl taco", "gl taco 1", "gl librosa", "gl padded", "gl per line"):
        if key in measurements:
            measurements[key]()
    for vocoder in vocoders.values():
        run_hifigan(vocoder, [mel[:, :8] for mel in log_mels[:2]], 2)

    runs: dict[str, list[float]] = {key: [] for key in measurements}
    for number in range(1, args.repeat + 1):
        print(f"round {number}/{args.repeat} ...", file=sys.stderr)
        for key, measure in measurements.items():
            if key not in hifigan_keys or number <= args.vocoder_repeat:
                runs[key].append(measure())
    speedup_after, probe_after = probe(args.threads)
    warning = contention_warning([speedup_before, speedup_after], args.threads)

    # ---- report
    print(describe_machine())
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
          f"librosa {importlib.metadata.version('librosa')}")
    print(f"torch threads: {torch.get_num_threads()} (torch.set_num_threads({args.threads})), "
          f"inter-op {torch.get_num_interop_threads()}; librosa: numpy FFT, one thread")
    print(f"probe before: {probe_before}")
    print(f"probe after:  {probe_after}")
    if warning:
        print(warning)
    chars = [line.characters for line in lines]
    print(f"lines: the first {N_LINES} of {CORPUS.relative_to(CORPUS.parents[1])}/metadata.csv, "
          f"{min(chars)} to {max(chars)} spoken characters (mean {np.mean(chars):.1f}), planned at "
          f"{CHARACTERS_PER_SECOND:g} characters/s; random weights, gate never fires, lengths set by max_decoder_steps")
    for name in PRESET_NAMES:
        steps, r = planned[name]["steps"], planned[name]["r"]
        subset = one_by_one[name]
        padding = 1 - sum(steps) / (N_LINES * max(steps))
        print(f"{name}: r={r}, {min(steps)} to {max(steps)} decoder steps a line, "
              f"{sum(audio_seconds(n, r, features) for n in steps):.1f} s of audio in {N_LINES} lines; "
              f"batch {BATCH_SIZE} pads every line to the longest ({padding:.0%} of its decoder rows and "
              f"Griffin-Lim frames are padding); "
              f"batch 1 on {len(subset)} lines (mean {np.mean([chars[i] for i in subset]):.1f} characters)")
    print(f"Griffin-Lim: {DEFAULT_ITERATIONS} iterations, momentum {DEFAULT_MOMENTUM}; synthesis power "
          f"{SynthConfig().power}; clip {entry.id}, {magnitude.shape[-1]} frames "
          f"({(magnitude.shape[-1] - 1) * features.hop_length / features.sample_rate:.2f} s)")
    print(f"HiFi-GAN: {', '.join(HIFIGAN_VERSIONS)} with random weights on random log mels of the tiny lines' "
          f"{sum(line_frames)} frames; Griffin-Lim of the same lengths in the same rounds; native bfloat16: "
          f"{'yes' if cpu_has_bfloat16() else 'no'}")
    print(f"timings: best of {args.repeat} runs, taking turns (HiFi-GAN: of the first {args.vocoder_repeat})")
    print()

    rows = []
    for name in synths:
        steps, r = planned[name]["steps"], planned[name]["r"]
        audio = sum(audio_seconds(n, r, features) for n in steps)
        model, vocoded = min(runs[f"{name} model"]), min(runs[f"{name} vocoded"])
        rows.append((f"{name}: RTF, model only, batch {BATCH_SIZE}",
                     f"{model / audio:.3f} ({describe_times(runs[f'{name} model'])} for {audio:.1f} s)", "", ""))
        goal, result = "", ""
        if name == "base":
            goal, result = f"< {TARGET_RTF}", verdict(vocoded / audio < TARGET_RTF)
        rows.append((f"{name}: RTF, model + Griffin-Lim, batch {BATCH_SIZE}",
                     f"{vocoded / audio:.3f} ({describe_times(runs[f'{name} vocoded'])}; Griffin-Lim "
                     f"{vocoded - model:.2f} s of it)", goal, result))
    for name in synths:
        steps, r = planned[name]["steps"], planned[name]["r"]
        subset = one_by_one[name]
        audio = sum(audio_seconds(n, r, features) for n in steps)
        single_audio = sum(audio_seconds(steps[i], r, features) for i in subset)
        batched, single = min(runs[f"{name} vocoded"]), min(runs[f"{name} one by one"])
        speedup = (single / single_audio) / (batched / audio)
        rows.append((f"{name}: per line, batch {BATCH_SIZE} (model + GL)",
                     f"{batched / N_LINES:.3f} s ({N_LINES} lines)", "", ""))
        rows.append((f"{name}: per line, batch 1 (model + GL)",
                     f"{single / len(subset):.3f} s ({len(subset)} lines, "
                     f"{describe_times(runs[f'{name} one by one'])}, RTF {single / single_audio:.3f})", "", ""))
        rows.append((f"{name}: batch {BATCH_SIZE} speed-up per line", f"{speedup:.2f}x (ratio of RTFs)",
                     f">= {TARGET_BATCH_SPEEDUP:g}x", verdict(speedup >= TARGET_BATCH_SPEEDUP)))
    if not args.vocoders_only:
        random_phase = griffin_lim(magnitude, features, 0, seed=0)
        rows.append(("Griffin-Lim, random phase (0 iterations)",
                     f"spectral convergence {convergence(target, random_phase, features):.3f}", "", ""))
        threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
        for key, label in (("gl taco", f"taco, torch, {threads}"), ("gl taco 1", "taco, torch, 1 thread"),
                           ("gl librosa", "librosa.griffinlim, numpy")):
            rows.append((f"Griffin-Lim, {label}", f"{describe_times(runs[key])}, spectral convergence "
                         f"{convergence(target, gl_waves[key], features):.3f}", "", ""))
        rows.append(("Griffin-Lim, librosa / taco time", f"{min(runs['gl librosa']) / min(runs['gl taco']):.2f}x at "
                     f"{threads}, {min(runs['gl librosa']) / min(runs['gl taco 1']):.2f}x at 1 thread", "", ""))
    padded, per_line = min(runs["gl padded"]), min(runs["gl per line"])
    rows.append((f"Griffin-Lim of {N_LINES} tiny lines, padded batch / each at its own length",
                 f"{padded / per_line:.2f}x ({describe_times(runs['gl padded'])}; "
                 f"{describe_times(runs['gl per line'])})", "", ""))
    gl_audio = sum((n - 1) * features.hop_length for n in line_frames) / features.sample_rate
    hifigan_audio = sum(line_frames) * features.hop_length / features.sample_rate
    gl_rtf = min(runs["gl per line"]) / gl_audio
    rows.append((f"Griffin-Lim ({DEFAULT_ITERATIONS} iterations): RTF, {N_LINES} tiny lines each alone",
                 f"{gl_rtf:.3f} ({describe_times(runs['gl per line'])} for {gl_audio:.1f} s)", "", ""))
    for version in HIFIGAN_VERSIONS:
        rtfs = {(dtype, b): min(runs[hifigan_key(version, dtype, b)]) / hifigan_audio
                for v, dtype, b in variants if v == version}
        goal, passed = (f"< {TARGET_V1_RTF:g}", min(rtfs.values()) < TARGET_V1_RTF) if version == "v1" else (
            f"< Griffin-Lim's {gl_rtf:.3f}", min(rtfs.values()) < gl_rtf)
        for number, ((dtype, b), rtf) in enumerate(rtfs.items(), 1):
            last = number == len(rtfs)
            rows.append((f"HiFi-GAN {version.upper()} {dtype}: RTF, batch {b}",
                         f"{rtf:.3f} ({describe_times(runs[hifigan_key(version, dtype, b)])} for {hifigan_audio:.1f} s)",
                         goal if last else "", verdict(passed) + " (the fastest)" if last else ""))
        if (version, "bfloat16") in vocoders:
            [full], [half] = (vocoders[version, dtype].vocode_each(log_mels[:1]) for dtype in ("float32", "bfloat16"))
            rows.append((f"HiFi-GAN {version.upper()} bfloat16 against float32: relative error of the waveform",
                         f"{np.linalg.norm(half - full) / np.linalg.norm(full):.1e}", "", ""))
    print_table(rows)


if __name__ == "__main__":
    main()
