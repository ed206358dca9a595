"""A HiFi-GAN generator file -> a vocoder ready for taco's mels: loading, the feature check, batched vocoding.

A generator file is what github.com/jik876/hifi-gan publishes (LJ_V1/generator_v1, UNIVERSAL_V1/g_02500000,
...): `{"generator": state_dict}` under weight norm, beside the `config.json` it was trained with. Both
torch serializations load (the zip format of torch >= 1.6 and the legacy one of the torch 1.4 the reference
pins), with `weights_only=True`, so loading a file runs no code from it.

The mel must be the one the generator was trained on: the same sample rate, n_fft, hop, window length,
mel bands and band edges; anything else is refused. What still differs from the reference's mel, and why
it does not matter to a listener:

- framing: the reference pads the signal by (n_fft - hop) / 2 on each side and frames it without centring,
  so its frame k is centred on sample k * hop + hop / 2; taco's centred STFT (n_fft / 2 of padding, as
  NVIDIA/tacotron2's) centres frame k on sample k * hop and has one frame more. The audio comes out half a
  hop (5.8 ms at 22.05 kHz) late, inaudible; NVIDIA/tacotron2's mels, on which the reference fine-tuned
  its LJ_FT_T2 generators, are framed as taco's.
- the magnitude: the reference adds 1e-9 under the square root of each bin's power, which lifts only bins
  below about 3e-5; a whole band of them stays under the 1e-5 clamp of the log.
- level: the reference trained on clips scaled to a peak of 0.95; taco keeps each clip's own level. A
  quieter clip's log-mel is the same shape shifted down, which the generator renders quieter.

Batches: each mel is followed by silence (the log of the 1e-5 floor) for as many frames as the generator
sees past its end (`right_context_frames`) and its waveform is cut at frames x hop, so a mel gives the
same samples alone and in any padded batch (to float rounding; tests/test_vocoder.py). Its last samples
therefore hear silence after the mel, where the reference's convolutions hear zeros (a log-mel of 0, a loud
band); only the last 12 to 14 frames' samples can differ from the reference's.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from taco.errors import one_line
from taco.features.mel import MEL_FLOOR, FeatureConfig
from taco.pipeline.batching import similar_length_chunks
from taco.pipeline.device import pick_device
from taco.pipeline.hifigan import Generator, HiFiGANConfig, fold_weight_norm, right_context_frames
from taco.pipeline.synth import check_output, write_wav
from taco.progress import progress_bar

# The reference ships each generator beside the config it was trained with, under this name.
CONFIG_NAME = "config.json"
# The value of silence in a natural-log mel: the log of the floor every mel is clamped at.
SILENCE = math.log(MEL_FLOOR)
# Mels vocoded together by default: on a GPU as many as synthesis decodes together; on the CPU one at a time,
# which was 3-5x faster than one batch of 16 lines (real-time factor of HiFi-GAN V1 0.196 against 0.649, V3
# 0.029 against 0.141; README): the padding to the longest line is work too, and batching saves a CPU nothing else.
GPU_BATCH_SIZE = 16
# A batch is padded with silence to a multiple of this many frames (0.74 s at hop 256), so that lines of
# similar lengths share one input shape: oneDNN builds its convolutions anew for every shape it has not seen,
# which on 2 CPU cores cost V3 about as much as vocoding a 4-second line (16 lines of new lengths: real-time
# factor 0.021-0.023 in bfloat16 and 0.037-0.072 in float32, the same lines again 0.012 and 0.020). The most it
# adds is 63 frames of silence a batch.
FRAME_BUCKET = 64
# FeatureConfig field -> the HiFi-GAN config field that must equal it
MATCHING_FIELDS = {
    "sample_rate": "sampling_rate",
    "n_fft": "n_fft",
    "hop_length": "hop_size",
    "win_length": "win_size",
    "n_mels": "num_mels",
    "f_min": "fmin",
    "f_max": "top_frequency",
}


class VocoderError(Exception):
    """A generator file, its config or a mel that cannot be used as asked; str() is one line naming the file."""


def read_config(path: str | os.PathLike) -> HiFiGANConfig:
    """The generator fields of a reference config.json."""
    path = Path(path)
    if not path.is_file():
        raise VocoderError(f"{path}: no such HiFi-GAN config (the reference ships one as {CONFIG_NAME} beside the "
                           "generator file; give it with --vocoder-config)")
    try:
        return HiFiGANConfig.from_reference(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as error:
        raise VocoderError(f"{path}: not a HiFi-GAN config ({type(error).__name__})") from None
    except ValueError as error:
        raise VocoderError(f"{path}: {error}") from None


def load_generator(path: str | os.PathLike, config: HiFiGANConfig) -> Generator:
    """The generator of a reference file (`{"generator": state_dict}`, weight norm folded) on the CPU, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise VocoderError(f"{path}: no such generator file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign, truncated or code-carrying files
        raise VocoderError(f"{path}: not a readable torch file ({type(error).__name__})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("generator"), dict):
        held = ", ".join(map(str, list(saved)[:4])) if isinstance(saved, dict) else type(saved).__name__
        raise VocoderError(f"{path}: not a HiFi-GAN generator file (no 'generator' state dict; it holds {held})")
    try:
        state = fold_weight_norm(saved["generator"])
    except ValueError as error:
        raise VocoderError(f"{path}: {error}") from None
    generator = Generator(config)
    expected = generator.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        raise VocoderError(f"{path}: not the generator its config describes: {len(missing)} tensors missing"
                           f"{' (' + missing[0] + ', ...)' if missing else ''}, {len(unexpected)} unknown"
                           f"{' (' + unexpected[0] + ', ...)' if unexpected else ''}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise VocoderError(f"{path}: {name} is {tuple(state[name].shape)} in the file, {tuple(tensor.shape)} in "
                               "its config: is it the config of this generator (V1, V2, V3)?")
    generator.load_state_dict(state)
    return generator.eval()


def cpu_has_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    # torch has no public check; inductor and torch's own tests ask this one
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def half_dtype(device: torch.device) -> torch.dtype:
    """The dtype of `half` on `device`: float16 on CUDA; bfloat16 on a CPU whose oneDNN has native bfloat16
    (AVX-512 BF16 or AMX), where V3 vocodes about twice as fast as in float32 with a waveform within 0.3% of
    it (README). Emulated, bfloat16 ran 40x slower than float32, so a CPU without it is refused."""
    if device.type == "cuda":
        return torch.float16
    if cpu_has_bfloat16():
        return torch.bfloat16
    raise VocoderError("half precision on the CPU needs native bfloat16 (AVX-512 BF16 or AMX), which this CPU "
                       "lacks (emulated it ran 40x slower than float32); leave out --half or use --device cuda")


class Vocoder:
    """A HiFi-GAN generator on a device, with the config of the mel it expects."""

    def __init__(self, generator: Generator, device: str | torch.device | None = None, half: bool = False):
        self.config = generator.config
        self.device = pick_device(device)
        self.dtype = half_dtype(self.device) if half else torch.float32
        self.generator = generator.to(self.device, self.dtype).eval()
        self.tail = right_context_frames(self.config)

    @classmethod
    def from_file(cls, path: str | os.PathLike, config_path: str | os.PathLike | None = None,
                  device: str | torch.device | None = None, half: bool = False) -> Vocoder:
        """A public generator file, with `config_path` or else the config.json beside it."""
        config = read_config(config_path if config_path is not None else Path(path).parent / CONFIG_NAME)
        return cls(load_generator(path, config), device, half)

    @property
    def batch_size(self) -> int:
        """How many mels vocode_each takes together unless told: one on the CPU, GPU_BATCH_SIZE on a GPU."""
        return 1 if self.device.type == "cpu" else GPU_BATCH_SIZE

    @property
    def sample_rate(self) -> int:
        return self.config.sampling_rate

    def check_features(self, features: FeatureConfig, source: str | os.PathLike) -> None:
        """Refuse mels made by `features` (of `source`, a checkpoint) unless they are the generator's mels."""
        differ = [f"{ours} {getattr(features, ours)} (the vocoder's: {getattr(self.config, theirs)})"
                  for ours, theirs in MATCHING_FIELDS.items() if getattr(features, ours) != getattr(self.config, theirs)]
        if differ:
            raise VocoderError(f"{source}: its mels are not the ones the vocoder was trained on: {', '.join(differ)}")

    @torch.inference_mode()
    def vocode(self, log_mels: torch.Tensor, frames: list[int]) -> list[np.ndarray]:
        """(B, num_mels, T) natural-log mels -> each one's float32 waveform of frames[i] * hop samples.

        Whatever lies past a mel's frames[i] is replaced by silence, for at least `self.tail` frames past its
        end and up to a multiple of FRAME_BUCKET frames."""
        batch, n_mels, _ = log_mels.shape
        if n_mels != self.config.num_mels:
            raise VocoderError(f"the vocoder takes {self.config.num_mels} mel bands, got {n_mels}")
        length = math.ceil((max(frames) + self.tail) / FRAME_BUCKET) * FRAME_BUCKET
        padded = torch.full((batch, n_mels, length), SILENCE, dtype=self.dtype, device=self.device)
        for row, n in enumerate(frames):
            padded[row, :, :n] = log_mels[row, :, :n]
        waves = self.generator(padded).float().cpu()  # (B, length * hop)
        return [waves[row, : n * self.config.hop_size].numpy() for row, n in enumerate(frames)]

    def vocode_each(self, log_mels: list[np.ndarray], batch_size: int | None = None,
                    progress: bool = False) -> list[np.ndarray]:
        """(num_mels, frames) natural-log mels of any lengths -> their waveforms, in their order, vocoded
        `batch_size` (default: self.batch_size) at a time, mels of similar lengths together."""
        waves: list[np.ndarray | None] = [None] * len(log_mels)
        for i, wave in self.vocode_as_done(log_mels, batch_size, progress):
            waves[i] = wave
        return waves

    def vocode_as_done(self, log_mels: list[np.ndarray], batch_size: int | None = None,
                       progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """As vocode_each, but (position in `log_mels`, waveform) as each batch finishes, in no fixed order."""
        batch_size = self.batch_size if batch_size is None else batch_size
        with progress_bar(total=len(log_mels), unit="mel", desc="vocode", disable=not progress) as bar:
            for chunk in similar_length_chunks([mel.shape[1] for mel in log_mels], batch_size):
                frames = [log_mels[i].shape[1] for i in chunk]
                batch = torch.full((len(chunk), self.config.num_mels, max(frames)), SILENCE)
                for row, i in enumerate(chunk):
                    batch[row, :, : frames[row]] = torch.from_numpy(log_mels[i])
                yield from zip(chunk, self.vocode(batch, frames))
                bar.update(len(chunk))


def read_mel(path: str | os.PathLike, n_mels: int) -> np.ndarray:
    """A saved natural-log mel as float32 (n_mels, frames); a leading batch axis of 1 is dropped."""
    path = Path(path)
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file, left by a killed writer
        raise VocoderError(f"{path}: not a readable .npy array ({one_line(error)})") from None
    if not isinstance(mel, np.ndarray):  # an .npz archive of several arrays
        raise VocoderError(f"{path}: an archive of arrays ({', '.join(mel.files)}), not one .npy mel")
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or mel.shape[0] != n_mels or mel.shape[1] == 0:
        hint = " (transposed? the convention is (n_mels, frames))" if mel.ndim == 2 and mel.shape[1] == n_mels else ""
        raise VocoderError(f"{path}: shape {mel.shape}, the vocoder takes ({n_mels}, frames){hint}")
    if not np.issubdtype(mel.dtype, np.floating) or not np.isfinite(mel).all():
        raise VocoderError(f"{path}: not a finite floating-point mel (dtype {mel.dtype})")
    return mel.astype(np.float32)


def vocode_files(generator_path: str | os.PathLike, mel_paths: list[str | os.PathLike], out_dir: str | os.PathLike,
                 config_path: str | os.PathLike | None = None, batch_size: int | None = None,
                 device: str | None = None, half: bool = False, progress: bool = False,
                 on_written: Callable[[Path, float], None] | None = None) -> list[tuple[Path, float]]:
    """The Python API of `taco vocode`: each saved mel -> OUT_DIR/its name.wav, 16-bit at the vocoder's rate.
    Returns (wav path, seconds) per mel, in their order.

    Every mel is read and checked before the first is vocoded. Each wav is written as soon as its batch is
    done, and `on_written(path, seconds)` called, so that a stop keeps the finished ones; batches hold mels
    of similar lengths, so the wavs are written in no fixed order."""
    mel_paths = [Path(path) for path in mel_paths]
    outputs = [Path(out_dir) / f"{path.stem}.wav" for path in mel_paths]
    if len(set(outputs)) < len(outputs):
        twice = next(path for path in outputs if outputs.count(path) > 1)
        raise VocoderError(f"two mels would both be written to {twice}: give mels of distinct names")
    vocoder = Vocoder.from_file(generator_path, config_path, device, half)
    mels = [read_mel(path, vocoder.config.num_mels) for path in mel_paths]
    if outputs:
        check_output(outputs[0])  # the folder can be made, before the vocoding
    seconds = [0.0] * len(outputs)
    for i, wave in vocoder.vocode_as_done(mels, batch_size, progress):
        write_wav(outputs[i], wave, vocoder.sample_rate)
        seconds[i] = len(wave) / vocoder.sample_rate
        if on_written is not None:
            on_written(outputs[i], seconds[i])
    return list(zip(outputs, seconds))
