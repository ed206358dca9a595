"""Normalized mel -> waveform without a neural vocoder: least-squares mel inversion + fast Griffin-Lim.

Fast Griffin-Lim (Perraudin, Balazs and Søndergaard, 2013) adds momentum to the classic phase
iteration; it converges in a few tens of iterations where plain Griffin-Lim needs hundreds.
Everything runs in torch on whatever device the mel is on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from taco.features.mel import FeatureConfig, denormalize, hann_window, mel_filterbank

# Momentum of the fast variant: 0.99 is the value Perraudin et al. recommend and torchaudio uses.
DEFAULT_MOMENTUM = 0.99
# Iterations: NVIDIA/tacotron2's inference notebook uses 60; 32 (torchaudio's default) is close in quality at half the cost.
DEFAULT_ITERATIONS = 32
# Keeps the phase normalization finite where the rebuilt spectrum is exactly zero.
_EPSILON = 1e-16


def mel_to_magnitude(feature: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """(..., n_mels, frames) normalized mel -> (..., n_fft // 2 + 1, frames) linear magnitude.

    Least-squares inverse of the filterbank (its pseudo-inverse), clamped at zero: the mel bands overlap,
    so the magnitude is under-determined and the minimum-norm solution is the smoothest one.
    """
    filters = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.f_min, config.f_max)
    inverse = torch.linalg.pinv(filters.to(torch.float64)).to(feature.dtype).to(feature.device)
    # (n_freqs, n_mels) @ (..., n_mels, frames) -> (..., n_freqs, frames)
    return (inverse @ denormalize(feature, config.normalization)).clamp(min=0.0)


def griffin_lim(
    magnitude: torch.Tensor,
    config: FeatureConfig,
    iterations: int = DEFAULT_ITERATIONS,
    momentum: float = DEFAULT_MOMENTUM,
    power: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """(..., n_freqs, frames) magnitude -> (..., samples) waveform, samples = (frames - 1) * hop_length.

    `power` > 1 sharpens the magnitude before phase recovery (Tacotron 1 used 1.5), which lowers the
    phasiness of Griffin-Lim at the cost of some loudness. The random initial phase comes from `seed`.
    The waveform is rebuilt as if silence followed the last frame, and a line's frames are rebuilt alike
    whatever follows its silence, so that every line of a zero-padded batch sounds as it does alone.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    length = (magnitude.shape[-1] - 1) * config.hop_length
    # The line ends in silence. Without these frames the STFT would reflect the signal at the end, while
    # in a padded batch it sees the (zeroed) padding: with them the last real frames are rebuilt from the
    # same samples alone and in any batch (a frame's window reaches n_fft // 2 samples past its centre, and
    # the overlap-add weights of those samples come from frames up to n_fft / hop_length further on).
    magnitude = F.pad(magnitude.pow(power), (0, trailing_silent_frames(config)))
    padded_length = (magnitude.shape[-1] - 1) * config.hop_length
    window = hann_window(config.win_length, magnitude.dtype).to(magnitude.device)
    stft_args = dict(n_fft=config.n_fft, hop_length=config.hop_length, win_length=config.win_length, window=window)

    angles = torch.polar(torch.ones_like(magnitude), 2 * torch.pi * initial_phase(magnitude, seed))
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        wave = torch.istft(magnitude * angles, length=padded_length, **stft_args)
        rebuilt = torch.stft(wave, return_complex=True, pad_mode="reflect", **stft_args)
        # the momentum step: extrapolate away from the previous estimate, then keep only the phase
        angles = rebuilt - previous * (momentum / (1 + momentum))
        angles = angles / (angles.abs() + _EPSILON)
        previous = rebuilt
    return torch.istft(magnitude * angles, length=padded_length, **stft_args)[..., :length]


def trailing_silent_frames(config: FeatureConfig) -> int:
    """Frames of silence after a line's last frame that cover every sample its rebuild depends on."""
    return math.ceil(config.n_fft / config.hop_length)


def initial_phase(magnitude: torch.Tensor, seed: int) -> torch.Tensor:
    """(..., n_freqs, frames) random phase in [0, 1), the same for every line of a batch.

    Drawn frame after frame from a CPU generator, which fills a tensor in order: frame k gets the same
    phase whatever the number of frames after it and whatever the device, so that a line vocoded in a
    padded batch starts from the phase it starts from alone.
    """
    n_freqs, frames = magnitude.shape[-2:]
    generator = torch.Generator().manual_seed(seed)
    # (frames, n_freqs) -> (n_freqs, frames), broadcast over the batch dimensions by the caller
    phase = torch.rand((frames, n_freqs), generator=generator, dtype=magnitude.dtype).T
    return phase.to(magnitude.device)


def griffin_lim_lines(
    magnitudes: torch.Tensor,
    frames: list[int],
    config: FeatureConfig,
    each_alone: bool,
    iterations: int = DEFAULT_ITERATIONS,
    power: float = 1.0,
    seed: int = 0,
) -> list[torch.Tensor]:
    """(B, n_freqs, T) padded magnitudes -> each line's waveform, (frames[i] - 1) * hop_length samples.

    Whatever lies beyond a line's frames is ignored: `each_alone` runs every line alone on its first
    frames[i] frames; otherwise the padded batch goes through at once, its padding zeroed (a padded mel
    denormalizes to a sound, not to silence, which would leak into the line's last windows), and each
    waveform is cut. Either way a line gets the same waveform, to float rounding (tests/test_synth.py).

    On a CPU alone does no work on padding and was never slower in our measurements: 16 `tiny` lines of
    1.6-6 s took 1.34x less time, and a padded batch of 16 equal lines 1.0-2.6x the time of the lines one
    by one, depending on their length (benchmarks/synthesis.py). On a GPU the batch keeps the device busy.
    """
    settings = dict(config=config, iterations=iterations, power=power, seed=seed)
    if each_alone:
        return [griffin_lim(magnitudes[row, :, :n], **settings) for row, n in enumerate(frames)]
    frame_index = torch.arange(magnitudes.shape[-1], device=magnitudes.device)
    # (1, T) frame indices < (B, 1) lengths -> (B, T) -> (B, 1, T), broadcast over the frequencies
    inside = frame_index[None, :] < torch.tensor(frames, device=magnitudes.device)[:, None]
    batch = griffin_lim(magnitudes * inside[:, None, :], **settings)
    return [batch[row, : (n - 1) * config.hop_length] for row, n in enumerate(frames)]


def spectral_convergence(target: torch.Tensor, estimate: torch.Tensor) -> float:
    """||target - estimate||_F / ||target||_F of two magnitudes: 0 is a perfect reconstruction."""
    return (torch.linalg.norm(target - estimate) / torch.linalg.norm(target)).item()
