"""The HiFi-GAN generator (Kong, Kim and Bae 2020): natural-log mel -> waveform, in the parameter layout of
the public checkpoints of github.com/jik876/hifi-gan (LJ_V1, LJ_V2, LJ_V3, UNIVERSAL_V1, ...).

A 7-tap convolution lifts the mel to `upsample_initial_channel` channels; each upsampling stage is a leaky
ReLU and a transposed convolution that multiplies the length by its rate and halves the channels, followed
by the mean of several residual blocks of dilated convolutions (one per kernel size, the multi-receptive-
field fusion); a 7-tap convolution to one channel and tanh end it. The product of the rates is the hop, so
one mel frame becomes exactly `hop_size` samples.

The public files hold each convolution under weight norm (`weight_g`, `weight_v`); `fold_weight_norm` turns
them into plain weights once, so that inference pays nothing for the norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from taco.config import JsonConfig

# Slope of the leaky ReLUs inside the network (models.py's LRELU_SLOPE). The one before the last convolution
# is called without a slope in the reference, so it has torch's default, 0.01: the public weights were
# trained with that.
LEAKY_SLOPE = 0.1
LAST_LEAKY_SLOPE = 0.01
# The first and the last convolution have 7 taps in every public config.
OUTER_KERNEL = 7
# Residual blocks of type "1" have this many dilated convolutions (and as many undilated ones), type "2" this many.
DILATIONS_PER_BLOCK = {"1": 3, "2": 2}


@dataclass(frozen=True)
class HiFiGANConfig(JsonConfig):
    """The fields of a HiFi-GAN config.json that shape the generator or its mel; names as the reference's.

    Defaults: config_v1.json (the LJ_V1 and UNIVERSAL_V1 generators)."""

    resblock: str = "1"
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    num_mels: int = 80
    # the mel the generator was trained on (meldataset.py's mel_spectrogram)
    sampling_rate: int = 22050
    n_fft: int = 1024
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float | None = 8000.0  # None: half the sampling rate, as librosa's mel filters take it

    def __post_init__(self):
        # JSON gives lists; frozen configs hold tuples
        for name in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "resblock_dilation_sizes", tuple(tuple(d) for d in self.resblock_dilation_sizes))
        if self.resblock not in DILATIONS_PER_BLOCK:
            raise ValueError(f"HiFiGANConfig.resblock must be one of {tuple(DILATIONS_PER_BLOCK)}, got {self.resblock!r}")
        if not self.upsample_rates or len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("HiFiGANConfig needs one upsample_kernel_sizes entry per upsample_rates entry, "
                             f"got {list(self.upsample_rates)} and {list(self.upsample_kernel_sizes)}")
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes):
            # a transposed convolution with padding (k - u) / 2 gives exactly u samples per input sample
            if rate <= 0 or kernel < rate or (kernel - rate) % 2:
                raise ValueError(f"HiFiGANConfig: upsample kernel {kernel} at rate {rate} does not give exactly "
                                 f"{rate} samples per input sample (needs kernel >= rate, kernel - rate even)")
        if math.prod(self.upsample_rates) != self.hop_size:
            raise ValueError(f"HiFiGANConfig: the upsample rates {list(self.upsample_rates)} multiply to "
                             f"{math.prod(self.upsample_rates)}, not to hop_size {self.hop_size}")
        if self.upsample_initial_channel % 2 ** len(self.upsample_rates):
            raise ValueError(f"HiFiGANConfig.upsample_initial_channel ({self.upsample_initial_channel}) must halve "
                             f"{len(self.upsample_rates)} times")
        if not self.resblock_kernel_sizes or len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("HiFiGANConfig needs one resblock_dilation_sizes entry per resblock_kernel_sizes entry")
        wanted = DILATIONS_PER_BLOCK[self.resblock]
        if any(len(dilations) != wanted for dilations in self.resblock_dilation_sizes):
            raise ValueError(f"HiFiGANConfig: resblock {self.resblock!r} takes {wanted} dilations per kernel, got "
                             f"{[list(d) for d in self.resblock_dilation_sizes]}")

    @property
    def top_frequency(self) -> float:
        """The upper edge of the mel filters in Hz."""
        return self.sampling_rate / 2 if self.fmax is None else float(self.fmax)

    @classmethod
    def from_reference(cls, values: dict) -> HiFiGANConfig:
        """The generator's fields of a reference config.json, whose other fields (training) are ignored."""
        missing = [field.name for field in fields(cls) if field.name not in values]
        if missing:
            raise ValueError(f"not a HiFi-GAN config: no {', '.join(missing)}")
        return cls(**{field.name: values[field.name] for field in fields(cls)})


def same_padding(kernel_size: int, dilation: int) -> int:
    """Padding that keeps the length of a stride-1 convolution (the reference's get_padding)."""
    return (kernel_size - 1) * dilation // 2


def _conv(channels_in: int, channels_out: int, kernel_size: int, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(channels_in, channels_out, kernel_size, dilation=dilation,
                     padding=same_padding(kernel_size, dilation))


class ResBlock1(nn.Module):
    """resblock "1": per dilation, leaky ReLU -> dilated conv -> leaky ReLU -> conv, added to its input."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(_conv(channels, channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_conv(channels, channels, kernel_size) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated, plain in zip(self.convs1, self.convs2):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, LEAKY_SLOPE)), LEAKY_SLOPE))
        return x


class ResBlock2(nn.Module):
    """resblock "2" (V3's, smaller): per dilation, leaky ReLU -> dilated conv, added to its input."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(_conv(channels, channels, kernel_size, d) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated in self.convs:
            x = x + dilated(F.leaky_relu(x, LEAKY_SLOPE))
        return x


RESBLOCKS = {"1": ResBlock1, "2": ResBlock2}


class Generator(nn.Module):
    """(B, num_mels, frames) natural-log mel -> (B, frames * hop_size) waveform in (-1, 1). Pure: no device
    moves, no weight norm (see fold_weight_norm)."""

    def __init__(self, config: HiFiGANConfig):
        super().__init__()
        self.config = config
        channels = config.upsample_initial_channel
        self.conv_pre = _conv(config.num_mels, channels, OUTER_KERNEL)
        self.ups = nn.ModuleList()
        # flat, stage after stage, as the checkpoints number them: resblocks.{stage * kernels + kernel}
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, kernel, rate, padding=(kernel - rate) // 2))
            channels //= 2
            for size, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(RESBLOCKS[config.resblock](channels, size, dilations))
        self.conv_post = _conv(channels, 1, OUTER_KERNEL)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        kernels = len(self.config.resblock_kernel_sizes)
        x = self.conv_pre(mels)  # (B, num_mels, T) -> (B, C, T)
        for stage, upsample in enumerate(self.ups):
            x = upsample(F.leaky_relu(x, LEAKY_SLOPE))  # (B, C, T') -> (B, C / 2, T' * rate)
            blocks = self.resblocks[stage * kernels : (stage + 1) * kernels]
            x = sum(block(x) for block in blocks) / kernels
        x = self.conv_post(F.leaky_relu(x, LAST_LEAKY_SLOPE))  # (B, C_last, T * hop) -> (B, 1, T * hop)
        return torch.tanh(x).squeeze(1)


def right_context_frames(config: HiFiGANConfig) -> int:
    """Mel frames after a mel's last frame that its last `hop_size` output samples depend on: a bound on the
    generator's receptive field to the right, with one frame to spare.

    Summed over the layers, each reach in its own samples divided by its samples per frame: the first
    convolution reaches 3 frames; a transposed convolution with padding p and rate u reaches p / u of its
    input samples; a residual block the sum of its convolutions' half-widths, the widest of the parallel
    blocks counting; the last convolution 3 samples. V1 and V2: 14 frames, V3: 12.
    """
    reach = same_padding(OUTER_KERNEL, 1)
    samples_per_frame = 1
    for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
        reach += (kernel - rate) // 2 / rate / samples_per_frame
        samples_per_frame *= rate
        convs_per_dilation = 2 if config.resblock == "1" else 1
        widest = max(
            sum(same_padding(size, d) + (convs_per_dilation - 1) * same_padding(size, 1) for d in dilations)
            for size, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
        )
        reach += widest / samples_per_frame
    reach += same_padding(OUTER_KERNEL, 1) / samples_per_frame
    return math.ceil(reach) + 1


# Where each checkpoint layout keeps a weight-normed weight's magnitude g and direction v: torch.nn.utils.weight_norm
# (the reference's, torch 1.4) and torch.nn.utils.parametrizations.weight_norm (torch >= 2.1's).
WEIGHT_NORM_SUFFIXES = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


def fold_weight_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with each weight-normed weight (g, v) as the plain `.weight` it stands for, g * v / ||v||,
    the norm taken over all but the first dimension (weight norm's default dim=0, which the reference uses for
    every convolution, transposed ones included). Other entries pass through unchanged."""
    folded = {}
    for name, tensor in state_dict.items():
        for g_suffix, v_suffix in WEIGHT_NORM_SUFFIXES:
            if name.endswith(v_suffix):
                break
            if name.endswith(g_suffix):
                module = name[: -len(g_suffix)]
                if module + v_suffix not in state_dict:
                    raise ValueError(f"{name} has no {module + v_suffix} beside it")
                g, v = tensor, state_dict[module + v_suffix]
                norm = v.double().norm(dim=tuple(range(1, v.dim())), keepdim=True)
                folded[module + ".weight"] = (v.double() * (g.double() / norm)).to(v.dtype)
                break
        else:
            folded[name] = tensor
    return folded
