"""Input pipeline throughput and padding: taco's feature-store loader against mels made on the fly.

    python benchmarks/input_pipeline.py [--store DIR] [--corpus DIR | --count N]
                                        [--batches B] [--fly-batches F] [--workers W] [--repeat R]

Measured on the training split of one feature store: `--store`, or one that
`taco.features.preprocess.preprocess` builds into a temporary folder from `--corpus` (default: the
bundled corpus/ljspeech_flite) or from `--count` utterances of espeak-ng speech (made by
scripts/make_corpus.py into the cache the preprocess benchmark uses). The on-the-fly loaders read the
audio of that same corpus (with `--store`, the corpus the store records, or `--corpus`; audio in wavs/).
Batches follow the `tiny` preset: its TrainConfig (batch_frames, seed) and its model's reduction factor.

- taco loader: the training loader of `taco.pipeline.train.make_loaders` (BucketBatchSampler over the
  store's lengths, a DataLoader with W persistent workers reading the HDF5 shards, taco's collate), iterated
  the way `taco train` does: `sampler.set_epoch(epoch)`, then one pass over the loader per epoch. A small
  corpus has only ~10 batches per epoch, so B batches span several epochs; the workers start once, with the
  first epoch, and stay. Timed from the arrival of the first batch to that of batch B + 1, so the worker
  start-up is excluded.
- taco in-process floor (diagnostic): the same batches read from the store and collated in this process,
  no DataLoader, split into time spent in `FeatureStore.__getitem__` (HDF5 reads) and in collate. The
  gap between it and the loader is the DataLoader's cost: worker IPC, contention.
- on-the-fly loader, as NVIDIA/tacotron2's data_utils.TextMelLoader builds each item: read the audio file
  as 16-bit integers (theirs: scipy.io.wavfile in load_wav_to_torch; here soundfile, which also reads
  FLAC), divide by max_wav_value (32768), their TacotronSTFT.mel_spectrogram on the fly, encode the text.
  Their TacotronSTFT is rebuilt here (`TacotronConvMel`, float32 torch, as theirs): the signal reflect-
  padded by n_fft / 2 on each side, a conv1d with stride hop_length against a (2 (n_fft/2 + 1), 1, n_fft)
  Fourier basis (the real and the imaginary parts of the first n_fft/2 + 1 rows of the DFT matrix, times a
  periodic Hann window zero-padded to n_fft), magnitude sqrt(real^2 + imag^2), mel_basis @ magnitude, and
  their dynamic range compression log(clamp(mel, 1e-5)). Their mel_basis is librosa's Slaney filterbank;
  taco's `mel_filterbank` is the same (tests/test_mel.py checks it against librosa). The feature is theirs
  (natural log), not the store's normalization; the cost is the same. A clip at another rate is resampled
  with soxr (theirs refuses it). Batching as their train.py: DataLoader(shuffle=True, drop_last=True) with
  the same W workers, not persistent (theirs are not, so every epoch starts its workers again: those
  restarts are in the time), a fixed batch size equal to the mean utterances per batch of the taco loader's
  batches, and taco's collate in place of their TextMelCollate (the same zero padding to the longest item,
  rounded up to the reduction factor). One pass over the loader per epoch, timed as the taco loader but
  over F batches (`--fly-batches`, fewer than B: each takes ~40x longer). This is the baseline of the 20x
  target.
- on-the-fly in-process floor (diagnostic): the same work in this process, split into read, mel, text
  and collate.
- on-the-fly loader, torch.stft instead of their conv STFT (diagnostic, no target): the same loader with
  the STFT made by `torch.stft` in float32 (taco.features.mel.magnitude_stft on the float32 wave), all else
  as above. An FFT costs far less than their conv1d against the dense basis, so this row shows how much of
  the ratio is their STFT's cost and how much is making mels on the fly at all.
- padding waste (`taco.pipeline.batching.padding_waste`: the share of padded frames that are padding) of
  one epoch of the bucketed sampler's batches on the training lengths, against random batching cut under
  the same frame budget (the positions shuffled, then cut greedily by the sampler's own
  `taco.pipeline.batching.cut_batches`). Epoch 0 is the measure; epochs 0-9 give its mean and worst. The
  sampler's default length_jitter is used, as in make_loaders. Also shown: the bucketed sampler with
  length_jitter=0, and the waste of the on-the-fly loader's fixed-size random batches as they arrived.

The loaders take turns, R rounds of all of them, so that a busy moment on the machine does not land on
one of them only. Throughput is batches per second of the best of the R runs, with the real (unpadded)
mel frames per second of that run. Every loader's work runs on one torch thread: DataLoader workers set
that themselves, and this process sets it too, for the in-process floors and for W = 0. The audio files
are read once before any timing, so every run reads them from the page cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from taco.features.corpus import CorpusError, Entry
from taco.features.mel import FeatureConfig, hann_window, magnitude_stft, mel_filterbank, normalize
from taco.features.preprocess import library_versions, preprocess
from taco.features.store import FeatureStore, StoreError
from taco.features.text import TextConfig, encode
from taco.pipeline.batching import (DEFAULT_LENGTH_JITTER, BucketBatchSampler, FrameBudget, bucket_batches, collate,
                                    cut_batches, padding_waste)
from taco.pipeline.model import PRESETS as MODEL_PRESETS
from taco.pipeline.presets import TRAINING_PRESETS
from taco.pipeline.stored import AUDIO_DIR, SelectionError, store_corpus
from taco.pipeline.train import make_loaders

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the preprocess benchmark's corpus cache, and the report helpers every benchmark shares
from preprocess import cached_corpus, warm_page_cache  # noqa: E402
from report import describe_machine, load_average, print_table, verdict  # noqa: E402

BUNDLED_CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "ljspeech_flite"
PRESET = "tiny"
DEFAULT_BATCHES = 100
# Batches F per on-the-fly run: theirs take ~250 ms each (measured, bundled corpus, 2 cores), so 40 are ~10 s,
# over 4 epochs with their worker restarts (bundled corpus), and R rounds of all the runs stay under 3 minutes.
DEFAULT_FLY_BATCHES = 40
DEFAULT_REPEAT = 3
# NVIDIA/tacotron2 hparams.max_wav_value: full scale of 16-bit PCM, what load_wav_to_torch's samples are divided by
MAX_WAV_VALUE = 32768.0
# Epochs of batches whose padding waste gives the mean and the worst beside epoch 0's.
WASTE_EPOCHS = 10
MS = 1e3

# Targets from the issue.
TARGET_SPEEDUP = 20.0  # taco loader batches/s over the on-the-fly loader's
TARGET_WASTE = 0.05  # padding waste of the bucketed sampler's batches, one epoch


# ---- the store and the corpus ----------------------------------------------------------------------


def build_store(corpus: Path, store_dir: Path) -> float:
    """Build a feature store from `corpus` with the default configs; its wall seconds."""
    print(f"building a feature store from {corpus} in {store_dir} ...", file=sys.stderr)
    start = time.perf_counter()
    preprocess(corpus, store_dir, jobs=len(os.sched_getaffinity(0)), progress=False)
    return time.perf_counter() - start


def training_entries(store: FeatureStore, corpus: Path) -> list[Entry]:
    """The corpus entries (text, audio path) of the store's training utterances, in the store's order."""
    try:
        by_id = store_corpus(store, corpus)
    except (CorpusError, SelectionError) as error:
        raise SystemExit(f"{error}; pass the store's corpus with --corpus") from None
    ids = [store.ids[row] for row in store.split_indices("train")]
    missing = [id_ for id_ in ids if id_ not in by_id or not by_id[id_].audio_path.is_file()]
    if missing:
        raise SystemExit(f"{corpus}: has no metadata line or audio file for {len(missing)} of the store's "
                         f"{len(ids)} training utterances (first: {missing[0]}); pass the store's --corpus")
    return [by_id[id_] for id_ in ids]


# ---- one timed run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One pass of a loader over B batches, after its first batch."""

    seconds: float  # from the arrival of the first batch to that of batch B + 1
    first_batch_seconds: float  # from the first iterator's creation to the first batch: not in `seconds`
    batches: int
    epochs: int  # epochs begun, the first included
    real_frames: int  # sum of mel_lens
    padded_frames: int  # sum of len(batch) * its longest mel, as padding_waste counts (before rounding up to r)
    stages: dict[str, float] = field(default_factory=dict)  # in-process floors: seconds per stage over the B batches

    @property
    def batches_per_second(self) -> float:
        return self.batches / self.seconds

    @property
    def frames_per_second(self) -> float:
        return self.real_frames / self.seconds


def time_epochs(epoch_batches: Callable[[int], Iterable[dict]], n_batches: int) -> Run:
    """Take batches from epoch_batches(0), epoch_batches(1), ... until n_batches + 1 have arrived; time the last n."""
    start = time.perf_counter()
    first = None
    real = padded = done = 0
    epoch = 0
    while True:
        arrived = False
        for batch in epoch_batches(epoch):
            now = time.perf_counter()
            arrived = True
            if first is None:
                first = now  # the first batch pays for the worker start-up: not counted
                continue
            mel_lens = batch["mel_lens"]
            real += int(mel_lens.sum())
            padded += len(mel_lens) * int(mel_lens.max())
            done += 1
            if done == n_batches:
                return Run(now - first, first - start, done, epoch + 1, real, padded)
        if not arrived:
            raise RuntimeError(f"epoch {epoch} gave no batches")
        epoch += 1


def stage_seconds(per_batch: list[dict[str, float]]) -> dict[str, float]:
    """Seconds per stage over the batches after the first (the first opens files and is not timed)."""
    return {stage: sum(times[stage] for times in per_batch[1:]) for stage in per_batch[0]}


# ---- taco: the feature store -----------------------------------------------------------------------


def run_taco_loader(store_dir: Path, train_config, model_config, n_batches: int) -> Run:
    store = FeatureStore(store_dir)  # a fresh reader: no HDF5 file is open when the workers fork
    sampler, loader, _ = make_loaders(store, model_config, train_config)  # persistent workers when W > 0

    def epoch_batches(epoch: int) -> Iterable[dict]:
        sampler.set_epoch(epoch)
        return loader

    run = time_epochs(epoch_batches, n_batches)
    del loader  # its persistent workers stop with it
    store.close()
    return run


def run_taco_floor(store_dir: Path, train_config, model_config, n_batches: int) -> Run:
    store = FeatureStore(store_dir)
    rows = store.split_indices("train")
    sampler = BucketBatchSampler(store.n_frames[rows], max_frames=train_config.batch_frames,
                                 batch_size=train_config.batch_size, seed=train_config.seed)
    per_batch: list[dict[str, float]] = []

    def epoch_batches(epoch: int) -> Iterator[dict]:
        sampler.set_epoch(epoch)
        for positions in sampler:
            start = time.perf_counter()
            items = [store[int(rows[position])] for position in positions]
            read = time.perf_counter()
            batch = collate(items, model_config.reduction_factor)
            per_batch.append({"read": read - start, "collate": time.perf_counter() - read})
            yield batch

    run = time_epochs(epoch_batches, n_batches)
    store.close()
    run.stages = stage_seconds(per_batch)
    return run


# ---- on the fly: NVIDIA/tacotron2's TextMelLoader --------------------------------------------------


class TacotronConvMel:
    """(samples,) float32 wave in [-1, 1] -> (n_mels, frames) float32 log mel, as NVIDIA/tacotron2 makes it.

    Rebuilt from the description of their layers.py TacotronSTFT.mel_spectrogram and stft.py STFT.transform
    (the STFT as a conv1d against a windowed Fourier basis) and audio_processing.py dynamic_range_compression,
    all in float32 torch as theirs; their code is not copied. Their wave is a batch (B, samples); here B = 1,
    as TextMelLoader.get_mel calls it.
    """

    def __init__(self, features: FeatureConfig):
        self.features = features
        n_fft, win_length = features.n_fft, features.win_length
        self.n_fft, self.hop_length = n_fft, features.hop_length
        self.n_freqs = n_fft // 2 + 1
        # rows k < n_fft/2 + 1 of the DFT matrix, exp(-2 pi i k n / n_fft): real part cos, imaginary part -sin
        angles = 2 * np.pi * np.outer(np.arange(self.n_freqs), np.arange(n_fft)) / n_fft  # (n_freqs, n_fft)
        basis = np.concatenate([np.cos(angles), -np.sin(angles)])  # (2 n_freqs, n_fft)
        # periodic Hann of win_length (theirs: scipy get_window(..., fftbins=True)), zero-padded to n_fft at the centre
        window = np.zeros(n_fft)
        left = (n_fft - win_length) // 2
        window[left : left + win_length] = hann_window(win_length, torch.float64).numpy()
        # (2 n_freqs, n_fft) -> (2 n_freqs, 1, n_fft): conv1d weights, out_channels x in_channels x kernel
        self.basis = torch.from_numpy(basis * window)[:, None, :].to(torch.float32)
        # their librosa mel basis: Slaney scale and norm, the filterbank taco's mel_filterbank also gives
        self.mel_basis = mel_filterbank(features.sample_rate, n_fft, features.n_mels, features.f_min, features.f_max)

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        """(samples,) -> (n_freqs, frames): their STFT.transform's magnitude."""
        half = self.n_fft // 2
        # (samples,) -> (1, 1, samples) -> (1, 1, samples + n_fft): reflect padding centres the frames, as librosa
        padded = F.pad(wave[None, None, :], (half, half), mode="reflect")
        # (1, 1, samples + n_fft) -> (1, 2 n_freqs, frames) -> (2 n_freqs, frames)
        spectrum = F.conv1d(padded, self.basis, stride=self.hop_length)[0]
        real, imag = spectrum[: self.n_freqs], spectrum[self.n_freqs :]  # (n_freqs, frames) each
        return torch.sqrt(real**2 + imag**2)

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        # their mel_spectrogram asserts the wave is in [-1, 1]; it is paid for on every item, so here too
        if wave.min() < -1 or wave.max() > 1:
            raise ValueError("wave outside [-1, 1]")
        # (n_mels, n_freqs) @ (n_freqs, frames) -> (n_mels, frames)
        mel = self.mel_basis @ self.magnitude(wave)
        return normalize(mel, "log")  # their dynamic_range_compression, C = 1: log(clamp(mel, min=1e-5))


class TorchStftMel(TacotronConvMel):
    """TacotronConvMel with the STFT made by torch.stft (an FFT) in float32 instead of their conv1d; all else theirs."""

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        return magnitude_stft(wave, self.features)  # (samples,) -> (n_freqs, frames), centred, reflect-padded


class OnTheFlyTextMel(Dataset):
    """(tokens, mel) made from the corpus at every access, as NVIDIA/tacotron2's TextMelLoader makes them.

    tokens (n_tokens,) int32, as their IntTensor; mel (n_frames, n_mels) float32, a transposed view of the
    (n_mels, n_frames) `make_mel` gives (theirs too), in the layout taco's collate takes.
    """

    def __init__(self, entries: list[Entry], features: FeatureConfig, text: TextConfig,
                 make_mel: Callable[[torch.Tensor], torch.Tensor]):
        self.entries = entries
        self.features = features
        self.text = text
        self.make_mel = make_mel

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens(index), self.mel(self.wave(index))

    def wave(self, index: int) -> torch.Tensor:
        """(samples,) float32 in [-1, 1): 16-bit samples over max_wav_value, as load_wav_to_torch + get_mel."""
        samples, rate = soundfile.read(self.entries[index].audio_path, dtype="int16", always_2d=True)
        # (samples, channels) int16 -> (samples,) float32
        wave = samples.astype(np.float32).mean(axis=1) / MAX_WAV_VALUE
        if rate != self.features.sample_rate:
            wave = soxr.resample(wave, rate, self.features.sample_rate, quality="HQ").astype(np.float32)
        return torch.from_numpy(wave)

    def mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(samples,) -> (n_frames, n_mels)."""
        return self.make_mel(wave).T  # (n_mels, frames) -> (frames, n_mels), a view

    def tokens(self, index: int) -> torch.Tensor:
        return torch.tensor(encode(self.entries[index].text, self.text).ids, dtype=torch.int32)


def stft_difference(wave: torch.Tensor, features: FeatureConfig) -> tuple[float, float]:
    """Largest |difference| of TacotronConvMel's log mel from TorchStftMel's, over all bins and over the bins
    above -40 dB of the loudest (where float32 rounding of quiet bins does not count): a check that the
    two on-the-fly rows compute the same feature."""
    conv, fft = TacotronConvMel(features)(wave), TorchStftMel(features)(wave)  # (n_mels, frames) each
    difference = (conv - fft).abs()
    loud = fft > fft.max() + math.log(1e-2)  # natural log: -40 dB
    return float(difference.max()), float(difference[loud].max())


def run_on_the_fly_loader(dataset: OnTheFlyTextMel, batch_size: int, workers: int, reduction_factor: int,
                          seed: int, n_batches: int) -> Run:
    # NVIDIA/tacotron2 train.py: DataLoader(trainset, shuffle=True, batch_size=..., drop_last=True, collate_fn=...)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        collate_fn=functools.partial(collate, reduction_factor=reduction_factor),
                        generator=torch.Generator().manual_seed(seed))
    return time_epochs(lambda epoch: loader, n_batches)  # every pass over the loader is a new shuffle


def run_on_the_fly_floor(dataset: OnTheFlyTextMel, batch_size: int, reduction_factor: int, seed: int,
                         n_batches: int) -> Run:
    per_batch: list[dict[str, float]] = []

    def epoch_batches(epoch: int) -> Iterator[dict]:
        order = np.random.default_rng((seed, epoch)).permutation(len(dataset))
        for start in range(0, len(order) - batch_size + 1, batch_size):  # drop_last
            times = dict.fromkeys(("read", "mel", "text", "collate"), 0.0)
            items = []
            for index in order[start : start + batch_size].tolist():
                t0 = time.perf_counter()
                wave = dataset.wave(index)
                t1 = time.perf_counter()
                mel = dataset.mel(wave)
                t2 = time.perf_counter()
                tokens = dataset.tokens(index)
                t3 = time.perf_counter()
                items.append((tokens, mel))
                times["read"] += t1 - t0
                times["mel"] += t2 - t1
                times["text"] += t3 - t2
            t4 = time.perf_counter()
            batch = collate(items, reduction_factor)
            times["collate"] = time.perf_counter() - t4
            per_batch.append(times)
            yield batch

    run = time_epochs(epoch_batches, n_batches)
    run.stages = stage_seconds(per_batch)
    return run


# ---- padding waste ---------------------------------------------------------------------------------


def random_budget_batches(lengths: np.ndarray, max_frames: int | None, batch_size: int | None, seed: int,
                          epoch: int) -> list[list[int]]:
    """Random batching under taco's budget: the positions shuffled, then cut as the bucketed sampler cuts."""
    order = np.random.default_rng((seed, epoch)).permutation(len(lengths))
    return cut_batches(order, lengths, FrameBudget(max_frames=max_frames, batch_size=batch_size))


def epoch_wastes(make_batches: Callable[[int], list[list[int]]], lengths: np.ndarray) -> np.ndarray:
    """padding_waste of epochs 0 .. WASTE_EPOCHS - 1."""
    return np.array([padding_waste(make_batches(epoch), lengths) for epoch in range(WASTE_EPOCHS)])


def mean_batch_size(lengths: np.ndarray, train_config, n_batches: int) -> float:
    """Mean utterances per batch of the bucketed batches the taco loader delivers in its B + 1 batches."""
    sizes: list[int] = []
    epoch = 0
    while len(sizes) < n_batches + 1:
        batches = bucket_batches(lengths, max_frames=train_config.batch_frames, batch_size=train_config.batch_size,
                                 seed=train_config.seed, epoch=epoch)
        sizes.extend(len(batch) for batch in batches)
        epoch += 1
    return float(np.mean(sizes[: n_batches + 1]))


# ---- report ----------------------------------------------------------------------------------------


def best(runs: list[Run]) -> Run:
    return max(runs, key=lambda run: run.batches_per_second)


def describe_speed(runs: list[Run]) -> str:
    top = best(runs)
    others = ", ".join(f"{run.batches_per_second:.1f}" for run in runs)
    return (f"{top.batches_per_second:.1f} batches/s, {top.frames_per_second / 1e3:.1f}k mel frames/s "
            f"(best of {others} batches/s)")


def describe_stages(run: Run) -> str:
    per_batch = ", ".join(f"{stage} {seconds / run.batches * MS:.2f}" for stage, seconds in run.stages.items())
    return f"ms per batch: {per_batch}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def describe_waste(wastes: np.ndarray) -> str:
    return (f"{wastes[0]:.1%} (epochs 0-{WASTE_EPOCHS - 1}: mean {wastes.mean():.1%}, "
            f"worst {wastes.max():.1%})")


def print_report(header: list[str], rows: list[tuple[str, str, str, str]]) -> None:
    for line in header:
        print(line)
    print()
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="an existing feature store (default: build one from the corpus)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", type=Path, help=f"an LJSpeech-layout corpus (default: {BUNDLED_CORPUS.name})")
    source.add_argument("--count", type=int, help="make (or reuse) an espeak-ng corpus of this many utterances")
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="batches B timed per taco run")
    parser.add_argument("--fly-batches", type=int, default=DEFAULT_FLY_BATCHES,
                        help="batches F timed per on-the-fly run")
    parser.add_argument("--workers", type=int, default=TRAINING_PRESETS[PRESET].num_workers,
                        help=f"DataLoader workers W (default: the {PRESET} preset's)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs R of each loader")
    args = parser.parse_args()
    if min(args.batches, args.fly_batches, args.repeat) < 1 or args.workers < 0:
        parser.error("--batches, --fly-batches and --repeat must be at least 1, --workers at least 0")

    torch.set_num_threads(1)  # as in every DataLoader worker; see the docstring
    model_config = MODEL_PRESETS[PRESET]
    train_config = dataclasses.replace(TRAINING_PRESETS[PRESET], num_workers=args.workers)
    r = model_config.reduction_factor
    with tempfile.TemporaryDirectory(prefix="taco-bench-store-") as work:
        if args.store:
            store_dir, built = args.store, None
        else:
            corpus = args.corpus or (cached_corpus(args.count) if args.count else BUNDLED_CORPUS)
            store_dir = Path(work) / "store"
        try:
            if not args.store:
                built = build_store(corpus, store_dir)
            store = FeatureStore(store_dir)  # reads the index only: no shard is open when workers fork
        except (CorpusError, StoreError) as error:
            parser.error(str(error))
        if args.store:
            corpus = args.corpus or (cached_corpus(args.count) if args.count else Path(store.info["corpus"]))
        lengths = store.n_frames[store.split_indices("train")]
        entries = training_entries(store, corpus)
        warm_page_cache(entries)
        batch_size = round(mean_batch_size(lengths, train_config, args.batches))
        features = store.feature_config
        dataset = OnTheFlyTextMel(entries, features, store.text_config, TacotronConvMel(features))
        fft_dataset = OnTheFlyTextMel(entries, features, store.text_config, TorchStftMel(features))
        differences = stft_difference(dataset.wave(0), features)
        epoch_0 = bucket_batches(lengths, max_frames=train_config.batch_frames, batch_size=train_config.batch_size,
                                 seed=train_config.seed)

        runs: dict[str, list[Run]] = {"taco": [], "taco_floor": [], "fly": [], "fly_floor": [], "fly_fft": []}
        for number in range(1, args.repeat + 1):
            print(f"round {number}/{args.repeat} ...", file=sys.stderr)
            runs["taco"].append(run_taco_loader(store_dir, train_config, model_config, args.batches))
            runs["taco_floor"].append(run_taco_floor(store_dir, train_config, model_config, args.batches))
            runs["fly"].append(run_on_the_fly_loader(dataset, batch_size, args.workers, r, train_config.seed,
                                                     args.fly_batches))
            runs["fly_floor"].append(run_on_the_fly_floor(dataset, batch_size, r, train_config.seed,
                                                          args.fly_batches))
            runs["fly_fft"].append(run_on_the_fly_loader(fft_dataset, batch_size, args.workers, r, train_config.seed,
                                                         args.fly_batches))

        def bucketed(jitter: float) -> Callable[[int], list[list[int]]]:
            return lambda epoch: bucket_batches(lengths, max_frames=train_config.batch_frames,
                                                batch_size=train_config.batch_size, seed=train_config.seed,
                                                epoch=epoch, length_jitter=jitter)

        bucketed_waste = epoch_wastes(bucketed(DEFAULT_LENGTH_JITTER), lengths)  # as make_loaders' sampler
        unjittered_waste = epoch_wastes(bucketed(0.0), lengths)
        random_waste = epoch_wastes(lambda epoch: random_budget_batches(
            lengths, train_config.batch_frames, train_config.batch_size, train_config.seed, epoch), lengths)

    taco, fly, fly_fft = best(runs["taco"]), best(runs["fly"]), best(runs["fly_fft"])
    speedup = taco.batches_per_second / fly.batches_per_second
    frame_speedup = taco.frames_per_second / fly.frames_per_second
    fft_speedup = taco.batches_per_second / fly_fft.batches_per_second
    fft_frame_speedup = taco.frames_per_second / fly_fft.frames_per_second
    fly_waste = 1 - sum(run.real_frames for run in runs["fly"]) / sum(run.padded_frames for run in runs["fly"])
    taco_waste = 1 - sum(run.real_frames for run in runs["taco"]) / sum(run.padded_frames for run in runs["taco"])
    budget = (f"batch_frames {train_config.batch_frames}" if train_config.batch_frames is not None
              else f"batch_size {train_config.batch_size}")
    versions = library_versions()
    header = [
        f"{describe_machine()}; load average {load_average()}",
        f"python {versions['python']}, torch {versions['torch']}, numpy {versions['numpy']}, "
        f"h5py {versions['h5py']} (HDF5 {versions['hdf5']}), soundfile {versions['soundfile']}, "
        f"taco {versions['taco']}",
        f"store: {'built in ' + format(built, '.1f') + ' s from ' + str(corpus) if built is not None else store_dir}; "
        f"{len(lengths)} training utterances, {lengths.mean():.0f} mel frames on average (max {lengths.max()})",
        f"on-the-fly audio: {corpus / AUDIO_DIR}, {', '.join(sorted({e.audio_path.suffix for e in entries}))} files",
        f"'{PRESET}' preset: {budget}, reduction factor {r}; {len(epoch_0)} bucketed batches per epoch, "
        f"{batch_size} utterances per on-the-fly batch (the taco batches' mean)",
        f"W = {args.workers} workers; timed after the first batch (worker start-up excluded): B = {args.batches} "
        f"batches per taco run, {plural(taco.epochs, 'epoch')}" + (" (persistent workers)" if args.workers else "")
        + f"; F = {args.fly_batches} per on-the-fly run, {plural(fly.epochs, 'epoch')}"
        + (" (workers started again each epoch, as theirs)" if args.workers else "")
        + f"; best of R = {args.repeat} runs; torch on 1 thread",
        f"their conv STFT against torch.stft, log mel of the first clip: max |difference| {differences[0]:.1e}, "
        f"{differences[1]:.1e} within 40 dB of the loudest bin",
    ]
    taco_floor, fly_floor = best(runs["taco_floor"]), best(runs["fly_floor"])
    rows = [
        ("taco loader (make_loaders)",
         f"{describe_speed(runs['taco'])}; first batch {taco.first_batch_seconds * MS:.0f} ms", "", ""),
        ("taco in-process floor (no DataLoader)",
         f"{describe_speed(runs['taco_floor'])}; {describe_stages(taco_floor)}", "", ""),
        (f"on-the-fly loader (TextMelLoader + their conv STFT, batch {batch_size})",
         f"{describe_speed(runs['fly'])}; first batch {fly.first_batch_seconds * MS:.0f} ms", "", ""),
        ("on-the-fly in-process floor (their conv STFT)",
         f"{describe_speed(runs['fly_floor'])}; {describe_stages(fly_floor)}", "", ""),
        ("on-the-fly, torch.stft instead of their conv STFT",
         f"{describe_speed(runs['fly_fft'])}; first batch {fly_fft.first_batch_seconds * MS:.0f} ms", "", ""),
        ("taco / on-the-fly (their conv STFT)", f"{speedup:.1f}x batches/s ({frame_speedup:.1f}x mel frames/s)",
         f">= {TARGET_SPEEDUP:.0f}x", verdict(speedup >= TARGET_SPEEDUP)),
        ("taco / on-the-fly, torch.stft instead of their conv STFT",
         f"{fft_speedup:.1f}x batches/s ({fft_frame_speedup:.1f}x mel frames/s)", "", ""),
        (f"padding waste, bucketed sampler (length_jitter={DEFAULT_LENGTH_JITTER}), epoch 0",
         describe_waste(bucketed_waste), f"<= {TARGET_WASTE:.0%}", verdict(bucketed_waste[0] <= TARGET_WASTE)),
        ("padding waste, bucketed, length_jitter=0", describe_waste(unjittered_waste), "", ""),
        ("padding waste, random under the same budget", describe_waste(random_waste), "", ""),
        ("padding waste, as the loaders delivered",
         f"taco {taco_waste:.1%}, on-the-fly (conv STFT row, fixed size) {fly_waste:.1%}",
         "", ""),
    ]
    print_report(header, rows)


if __name__ == "__main__":
    main()
