"""Mel spectrograms: the feature config, STFT, Slaney filterbank, and both normalizations.

This is the only place in taco that turns audio into mels (preprocessing) or mels back into
magnitudes (synthesis), so the two can never drift apart.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from taco.config import JsonConfig

NORMALIZATIONS = ("db", "log")
# The dtype the STFT runs in, by FeatureConfig.fft_precision. float32 is how NVIDIA/tacotron2, HiFi-GAN and
# torchaudio compute it (mels within 5e-4 of librosa's); float64 keeps them within 1e-4 of librosa's, which
# windows and transforms in float64.
FFT_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Floor on mel magnitudes before taking a log: -100 dB. NVIDIA/tacotron2 and HiFi-GAN clamp at 1e-5.
MEL_FLOOR = 1e-5
# `db` normalization: 20*log10(mel) clipped to [DB_MIN, DB_MAX], then mapped linearly onto
# [-DB_SCALE, DB_SCALE], the seed's scale (kaituoxu/Tacotron2).
# DB_MIN is MEL_FLOOR in dB, as in the seed.
DB_MIN = -100.0
# DB_MAX: +20 dB, the ref_level_db that keithito/tacotron (and Coqui TTS after it) subtract before clipping
# at 0 dB. With Slaney-normalized filters the voiced low bands of speech peaking near full scale go above
# 0 dB, where the seed clipped them: up to +9.4 dB on the espeak-ng corpus bundled until 2026-12-02 (0.2% of
# its bins), +13.1 dB with each of its clips scaled to peak 1.0, +15.4 dB for flite's slt voice at peak 1.0;
# +8.6 dB in the store of today's bundled corpus (flite rms, 0.3% of its bins).
DB_MAX = 20.0
DB_SCALE = 4.0

# Slaney's mel scale (Auditory Toolbox, used by librosa with htk=False): linear below 1 kHz,
# logarithmic above, 27 mels per factor 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


@dataclass(frozen=True)
class FeatureConfig(JsonConfig):
    """How audio becomes a normalized mel spectrogram. Defaults: NVIDIA/tacotron2 hparams."""

    sample_rate: int = 22050  # LJSpeech's rate
    n_fft: int = 1024
    win_length: int = 1024  # ~46 ms at 22.05 kHz
    hop_length: int = 256  # ~11.6 ms: 86 frames per second
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0  # speech energy above 8 kHz is noise to the model; NVIDIA's mel_fmax
    normalization: str = "db"  # "db" (the seed) or "log" (NVIDIA/HiFi-GAN, to use their vocoders)
    trim_db: float | None = None  # trim leading/trailing audio quieter than peak - trim_db; None keeps all
    # "float32" (as NVIDIA/tacotron2, HiFi-GAN, torchaudio; mels within 5e-4 of librosa's; a whole preprocess
    # run takes 0.6-0.7 of float64's time) or "float64" (within 1e-4 of librosa's)
    fft_precision: str = "float32"

    def __post_init__(self):
        positive = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"FeatureConfig.{name} must be positive, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            raise ValueError(f"FeatureConfig.win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"FeatureConfig needs 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"FeatureConfig.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.fft_precision not in FFT_DTYPES:
            raise ValueError(f"FeatureConfig.fft_precision must be one of {tuple(FFT_DTYPES)}, got {self.fft_precision!r}")
        if self.trim_db is not None and self.trim_db <= 0:
            raise ValueError(f"FeatureConfig.trim_db must be positive or None, got {self.trim_db}")
        if not mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max).any():
            raise ValueError(
                f"FeatureConfig: no FFT bin of n_fft={self.n_fft} at {self.sample_rate} Hz falls between f_min="
                f"{self.f_min} and f_max={self.f_max} Hz, so every mel would be zero; widen the band or raise n_fft"
            )


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    linear = hz / _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_MEL + torch.log(hz.clamp(min=_SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return torch.where(hz >= _SLANEY_BREAK_HZ, logarithmic, linear)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    linear = mel * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return torch.where(mel >= _SLANEY_BREAK_MEL, logarithmic, linear)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular Slaney filters with Slaney (constant energy) norm, shape (n_mels, n_fft // 2 + 1).

    Built in float64 for accuracy and cached: the result is shared, never modify it in place.
    """
    fft_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(
        _hz_to_mel(torch.tensor(f_min, dtype=torch.float64)).item(),
        _hz_to_mel(torch.tensor(f_max, dtype=torch.float64)).item(),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges_hz = _mel_to_hz(edges_mel)  # (n_mels + 2,): left edge, centre, right edge of each filter
    widths = edges_hz[1:] - edges_hz[:-1]  # (n_mels + 1,)
    # (n_mels + 2, 1) - (1, n_freqs) -> (n_mels + 2, n_freqs)
    offsets = edges_hz[:, None] - fft_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]  # (n_mels, n_freqs)
    falling = offsets[2:] / widths[1:, None]  # (n_mels, n_freqs)
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0)
    slaney_norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])  # equal area per filter
    return (triangles * slaney_norm[:, None]).to(torch.float32)


@functools.lru_cache(maxsize=8)
def hann_window(win_length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Periodic Hann window, as librosa and NVIDIA/tacotron2 use; computed in float64, cached and shared."""
    return torch.hann_window(win_length, periodic=True, dtype=torch.float64).to(dtype)


def _stft(wave: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """(..., samples) -> (..., n_fft // 2 + 1, frames) complex spectrum; each frame is contiguous in memory.

    Frames are centred with reflect padding, as librosa's and NVIDIA/tacotron2's.
    """
    return torch.stft(
        wave,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=hann_window(config.win_length, wave.dtype).to(wave.device),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )


def _abs(spectrum: torch.Tensor) -> torch.Tensor:
    if spectrum.device.type == "cpu":
        # torch's complex abs() on CPU takes 10x numpy's (0.5 ms vs 0.05 ms for the mel's bins of a 4 s clip,
        # torch 2.13); the tensor and the array share memory, so this copies nothing extra
        return torch.from_numpy(np.abs(spectrum.numpy()))
    return spectrum.abs()


def magnitude_stft(wave: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """(..., samples) -> (..., n_fft // 2 + 1, frames) magnitude, in the real dtype matching `wave`."""
    return _abs(_stft(wave, config))


# Filters per block of the mel product. Each block is one small matrix product whose 16 float32 output
# columns fill whole SIMD registers. Measured (80 mels, torch 2.13's MKL on AVX-512): blocks of 8 filters
# took as long as one dense product, blocks of 13 0.85 of its time, blocks of 16 0.6.
FILTERS_PER_BLOCK = 16


@functools.lru_cache(maxsize=8)
def _mel_blocks(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float
) -> tuple[tuple[slice, torch.Tensor], ...]:
    """The filterbank as blocks of FILTERS_PER_BLOCK consecutive filters: (bins, weights (n_bins, n_filters)).

    A filter weighs only the FFT bins under its triangle (3 to 27 of 513 at the defaults), so one dense
    product of all bins with all filters multiplies mostly zeros; each block takes only the run of bins
    its filters weigh, 6176 multiplications per frame at the defaults instead of 29760. Bins above f_max
    are in no block and their magnitudes are never computed. Cached and shared: never modify in place.
    """
    filters = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
    blocks = []
    for first in range(0, n_mels, FILTERS_PER_BLOCK):
        block = filters[first : first + FILTERS_PER_BLOCK]
        weighted = block.sum(dim=0).nonzero()
        # a block of empty filters (many mels in a narrow band) weighs no bin and gives zeros
        bins = slice(int(weighted.min()), int(weighted.max()) + 1) if len(weighted) else slice(0, 0)
        blocks.append((bins, block[:, bins].T.contiguous()))
    return tuple(blocks)


def mel_spectrogram(wave: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """(..., samples) -> (..., n_mels, frames) float32 normalized mel, the feature the model learns.

    The result is a transposed view of (..., frames, n_mels) memory, so `.mT` of it, one frame per row
    as the store keeps them, costs no copy.

    By default (fft_precision "float32") the FFT runs in float32, as NVIDIA/tacotron2, HiFi-GAN and
    torchaudio compute it. Its rounding errors, relative to a frame's loudest bin, reach 2.9e-4 in the
    log-mel of quiet bins (3.7e-4 with the window applied in float64; measured against librosa on 100
    espeak utterances); a whole preprocess run takes 0.6-0.7 of the time of float64 (2-core Intel and AMD
    VMs). With fft_precision "float64" the FFT output is rounded to complex64, as librosa computes its
    STFT, and the mels stay within 1.4e-6 of librosa's.
    """
    blocks = _mel_blocks(config.sample_rate, config.n_fft, config.n_mels, config.f_min, config.f_max)
    n_bins = max(bins.stop for bins, _ in blocks)
    spectrum = _stft(wave.to(FFT_DTYPES[config.fft_precision]), config)
    # (..., n_freqs, frames) -> (..., frames, n_bins), each frame a contiguous row
    magnitude = _abs(spectrum[..., :n_bins, :].mT.to(torch.complex64))
    # per block (..., frames, its bins) @ (its bins, its filters), side by side -> (..., frames, n_mels)
    mel = torch.cat([magnitude[..., bins] @ weights.to(wave.device) for bins, weights in blocks], dim=-1)
    return normalize(mel, config.normalization).mT


def normalize(mel: torch.Tensor, normalization: str) -> torch.Tensor:
    """Linear mel magnitude -> the normalized feature."""
    if normalization == "log":
        return torch.log(mel.clamp(min=MEL_FLOOR))
    db = 20.0 * torch.log10(mel.clamp(min=MEL_FLOOR))
    db = db.clamp(DB_MIN, DB_MAX)
    return (db - DB_MIN) / (DB_MAX - DB_MIN) * (2 * DB_SCALE) - DB_SCALE


def clip_limits(normalization: str) -> tuple[float, float | None]:
    """The normalized feature's values at the floor and at the ceiling (None: `log` has no ceiling).

    A bin of a stored (float32) feature that equals one of them was clipped there, or lies within
    float32 rounding of it.
    """
    # (2,) magnitudes: silence and an infinitely loud bin, through the same float32 arithmetic as the mels
    floor, ceiling = normalize(torch.tensor([0.0, math.inf]), normalization).tolist()
    return floor, ceiling if math.isfinite(ceiling) else None


def log_mel(feature: torch.Tensor, normalization: str) -> torch.Tensor:
    """The normalized feature -> natural-log mel clamped at MEL_FLOOR, the input of NVIDIA/tacotron2's and
    HiFi-GAN's vocoders; same shape and dtype. Computed in float64, so a `log` feature comes back unchanged."""
    return normalize(denormalize(feature.double(), normalization), "log").to(feature.dtype)


def denormalize(feature: torch.Tensor, normalization: str) -> torch.Tensor:
    """The normalized feature -> linear mel magnitude (exact inverse of `normalize` inside its clip range)."""
    if normalization == "log":
        return torch.exp(feature)
    db = (feature + DB_SCALE) / (2 * DB_SCALE) * (DB_MAX - DB_MIN) + DB_MIN
    return torch.pow(10.0, db / 20.0)
