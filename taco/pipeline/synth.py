"""Synthesis: checkpoint + text -> mel -> waveform, batched, reading nothing but the checkpoint.

Text goes through the same front end as the feature store (the checkpoint's text config and symbol
table); the mel goes through Griffin-Lim with the checkpoint's feature config, or through a HiFi-GAN
vocoder (taco.pipeline.vocoder) trained on the same mels.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import soundfile
import torch

from taco.features.mel import FeatureConfig, log_mel
from taco.features.text import TextConfig, encode
from taco.files import replaced_when_written
from taco.pipeline.checkpoint import CheckpointError, load_checkpoint, load_weights
from taco.pipeline.device import pick_device
from taco.pipeline.griffin_lim import DEFAULT_ITERATIONS, griffin_lim_lines, mel_to_magnitude
from taco.pipeline.batching import pad_tokens, similar_length_chunks
from taco.pipeline.model import Inference, ModelConfig, Tacotron2
from taco.pipeline.reduction import steps_for
from taco.progress import progress_bar

if TYPE_CHECKING:  # the vocoder module writes its wavs with write_wav from here
    from taco.pipeline.vocoder import Vocoder

# Magnitude exponent before Griffin-Lim. Tacotron 1 (Wang et al. 2017) and Coqui TTS sharpen with 1.5 to lower
# the phasiness, but the recognizer understands less of it: Griffin-Lim of the stored mels of flite kal16 scored
# 0.44 word error rate at 1.5 and 0.28 at 1.0 (recordings 0.27), the bundled corpus 0.23 and 0.21, and `tiny`'s
# free-running speech 0.30 and 0.28 (docs/benchmarks.md, session 19). 0.8 and 1.2 were no better than 1.0.
DEFAULT_POWER = 1.0
# Peak level of written audio: a little headroom below full scale so 16-bit PCM never clips.
PEAK_LEVEL = 0.95
# What the wavs hold: 16-bit PCM, which every player reads.
SUBTYPE = "PCM_16"
# A mel this short means the gate fired at once: the wav is written (a few milliseconds), with a warning.
SHORT_MEL_FRAMES = 3


class SynthesisError(Exception):
    """A line that cannot be spoken or written as asked; str() is a one-line explanation."""


@dataclass(frozen=True)
class SynthConfig:
    """How to synthesize; nothing here changes the model."""

    batch_size: int = 16  # lines decoded together; each stops on its own gate
    max_decoder_steps: int | None = None  # None: the checkpoint's model config
    griffin_lim_iterations: int = DEFAULT_ITERATIONS
    power: float = DEFAULT_POWER
    seed: int = 0  # the prenet's dropout stays on at inference: the seed makes a run repeatable

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ValueError(f"SynthConfig.batch_size must be positive, got {self.batch_size}")
        if self.max_decoder_steps is not None and self.max_decoder_steps <= 0:
            raise ValueError(f"SynthConfig.max_decoder_steps must be positive, got {self.max_decoder_steps}")
        if self.power <= 0:
            raise ValueError(f"SynthConfig.power must be positive, got {self.power}")


@dataclass
class Utterance:
    """One synthesized line."""

    text: str
    cleaned: str
    dropped: dict[str, int]  # characters the symbol table cannot speak -> count
    unknown_words: dict[str, int]  # phonemes: words not in the pronouncing dictionary, spelled out -> count
    tokens: list[int]
    mel: np.ndarray  # (frames, n_mels) the model's normalized mel
    alignment: np.ndarray  # (decoder steps, tokens)
    gate: np.ndarray  # (decoder steps,) stop probability of each step
    hit_step_limit: bool  # the gate never fired: the audio is cut at the step limit
    wave: np.ndarray | None  # (samples,) float32 in [-1, 1]; None when not vocoded


class Synthesizer:
    """A model ready for inference, with the configs of the checkpoint it came from, and the vocoder that
    turns its mels into audio: Griffin-Lim, or `vocoder` when given (refused unless it takes these mels)."""

    def __init__(self, checkpoint_path: str | os.PathLike, device: str | None = None, vocoder: Vocoder | None = None,
                 int8: bool = False):
        """`int8`: the decoder's two LSTMs with 8-bit weights (CPU only, so the default device then is the CPU;
        see int8_decoder_lstms)."""
        self.device = pick_device("cpu" if int8 and device is None else device)
        if int8 and self.device.type != "cpu":
            raise ValueError(f"int8 inference runs on the CPU, not on {self.device}")
        checkpoint = load_checkpoint(checkpoint_path)
        for key in ("model", "model_config", "feature_config", "text_config", "symbols"):
            if key not in checkpoint:
                raise CheckpointError(f"{checkpoint_path}: checkpoint lacks {key!r}")
        try:
            self.model_config = ModelConfig.from_dict(checkpoint["model_config"])
            self.feature_config = FeatureConfig.from_dict(checkpoint["feature_config"])
            self.text_config = TextConfig.from_dict(checkpoint["text_config"])
        except ValueError as error:
            raise CheckpointError(f"{checkpoint_path}: {error} (made by another taco version?)") from None
        self.symbols = checkpoint["symbols"]
        self.model = Tacotron2(self.model_config)
        load_weights(self.model, checkpoint, checkpoint_path)
        self.model.to(self.device).eval()
        if int8:
            int8_decoder_lstms(self.model)
        if vocoder is not None:
            vocoder.check_features(self.feature_config, checkpoint_path)
        self.vocoder = vocoder

    def synthesize(self, texts: list[str], config: SynthConfig = SynthConfig(), progress: bool = False,
                   vocode: bool = True) -> list[Utterance]:
        """Mels, alignments and (with `vocode`) waveforms for `texts`, in their order.

        Texts with nothing to speak raise ValueError naming them; a NaN/inf mel or waveform raises
        SynthesisError naming its text."""
        results: list[Utterance | None] = [None] * len(texts)
        for i, utterance in self.synthesize_each(texts, config, progress, vocode):
            results[i] = utterance
        return results

    @torch.no_grad()  # torch wraps each step of a generator
    def synthesize_each(self, texts: list[str], config: SynthConfig = SynthConfig(), progress: bool = False,
                        vocode: bool = True, positions: list[int] | None = None) -> Iterator[tuple[int, Utterance]]:
        """(position in `texts`, utterance) as each batch finishes, so that a caller can write each line
        as soon as it is done. Batches hold lines of similar lengths, so the positions come in no fixed
        order. `positions`: only the texts at these positions (all when None), as when finishing a stopped
        run. Every text is checked before the first is synthesized; errors as `synthesize`, each line
        numbered by its place in `texts`."""
        encoded = [encode(text, self.text_config) for text in texts]
        for number, (text, item) in enumerate(zip(texts, encoded), start=1):
            if len(item.ids) <= int(self.text_config.add_eos):
                raise ValueError(f"text {number} ({text!r}) has nothing the model can speak")
        positions = list(range(len(texts))) if positions is None else positions
        torch.manual_seed(config.seed)
        with progress_bar(total=len(positions), unit="line", desc="synth", disable=not progress) as bar:
            for rows in similar_length_chunks([len(encoded[i].ids) for i in positions], config.batch_size):
                chunk = [positions[row] for row in rows]
                batch = self._synthesize_batch([texts[i] for i in chunk], [encoded[i] for i in chunk], config, vocode)
                for i, utterance in zip(chunk, batch):
                    _refuse_nonfinite(i + 1, utterance, self.vocoder)
                    yield i, utterance
                bar.update(len(chunk))

    def _synthesize_batch(self, texts, encoded, config: SynthConfig, vocode: bool) -> list[Utterance]:
        tokens, token_lens = pad_tokens([torch.tensor(item.ids, dtype=torch.int64) for item in encoded])
        inference = self.model.infer(tokens.to(self.device), token_lens.to(self.device), config.max_decoder_steps)
        mel_lens = inference.mel_lens.tolist()
        waves = self.vocode(inference.mels, mel_lens, config) if vocode else [None] * len(texts)
        utterances = []
        for row, (text, item, wave) in enumerate(zip(texts, encoded, waves)):
            mel, alignment, gate = inference_item(inference, row, len(item.ids), self.model_config.reduction_factor)
            utterances.append(Utterance(
                text=text,
                cleaned=item.cleaned,
                dropped=item.dropped,
                unknown_words=item.unknown_words,
                tokens=item.ids,
                mel=mel,
                alignment=alignment,
                gate=gate,
                hit_step_limit=bool(inference.hit_step_limit[row]),
                wave=wave,
            ))
        return utterances

    def vocode(self, mels: torch.Tensor, mel_lens: list[int], config: SynthConfig) -> list[np.ndarray]:
        """(B, T, n_mels) padded mels -> each item's waveform. With a neural vocoder, mel_lens[i] * hop samples
        each, at the level the vocoder renders (one at a time on a CPU, in batches on a GPU: Vocoder.batch_size).
        With Griffin-Lim, (mel_lens[i] - 1) *
        hop samples peak-normalized: on a CPU each item alone at its own length, on a GPU the padded batch at
        once, whose padding `griffin_lim_lines` silences."""
        if self.vocoder is not None:
            # (B, T, n_mels) -> (B, n_mels, T) natural-log mels, each cut to its length
            log_mels = log_mel(mels.transpose(1, 2).float(), self.feature_config.normalization).cpu()
            return self.vocoder.vocode_each([log_mels[row, :, :n].numpy() for row, n in enumerate(mel_lens)])
        # (B, T, n_mels) -> (B, n_mels, T) -> (B, n_freqs, T)
        magnitudes = mel_to_magnitude(mels.transpose(1, 2).float(), self.feature_config)
        waves = griffin_lim_lines(magnitudes, mel_lens, self.feature_config, each_alone=self.device.type == "cpu",
                                  iterations=config.griffin_lim_iterations, power=config.power, seed=config.seed)
        return [peak_normalize(wave.cpu().numpy()) for wave in waves]


def _refuse_nonfinite(number: int, utterance: Utterance, vocoder: Vocoder | None) -> None:
    """NaN/inf would reach the wav as full-scale noise or silence; say which line it was instead."""
    line = f"text {number} ({utterance.text!r})"
    if not np.isfinite(utterance.mel).all():
        raise SynthesisError(f"{line}: the model's mel is NaN/inf; the checkpoint's weights are broken")
    if utterance.wave is None or np.isfinite(utterance.wave).all():
        return
    if vocoder is None:
        raise SynthesisError(f"{line}: Griffin-Lim's waveform is NaN/inf; a lower power (--power) keeps the "
                             "magnitudes it raises within float32")
    remedy = ("float16 overflowed: leave out --half" if vocoder.dtype == torch.float16
              else "the generator's weights are broken")
    raise SynthesisError(f"{line}: the vocoder's waveform is NaN/inf; {remedy}")


def inference_item(inference: Inference, row: int, n_tokens: int, reduction_factor: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item `row` of a batched `infer`, cut to its own length, as float32 arrays: mel (frames, n_mels),
    alignment (steps, n_tokens) and the gate's stop probability (steps,)."""
    frames = int(inference.mel_lens[row])
    steps = steps_for(frames, reduction_factor)
    return (
        inference.mels[row, :frames].float().cpu().numpy(),
        inference.alignments[row, :steps, :n_tokens].float().cpu().numpy(),
        torch.sigmoid(inference.gate_logits[row, :steps].float()).cpu().numpy(),
    )


def synthesize(checkpoint_path: str | os.PathLike, texts: list[str], config: SynthConfig = SynthConfig(),
               device: str | None = None, vocoder: Vocoder | None = None, int8: bool = False) -> list[Utterance]:
    """The Python API of `taco synth`: waveforms (and mels, alignments) for `texts`, through Griffin-Lim or
    `vocoder` (`taco.Vocoder.from_file(generator_path)`)."""
    return Synthesizer(checkpoint_path, device, vocoder, int8).synthesize(texts, config)


def int8_decoder_lstms(model: Tacotron2) -> None:
    """Give the decoder's attention and decoder LSTMs 8-bit weights, in place, for inference on the CPU.

    Why: one decoder step of a single line reads every weight of both LSTMs (17.8M floats, 71 MB in `base`) for a
    few multiply-adds each, so on a CPU its time is memory traffic; int8 weights are a quarter of it.
    torch's dynamic quantization keeps a scale per weight matrix and quantizes each step's input on the
    fly; the state (h, c) and everything else stay float32. Its eager API is deprecated in favour of torchao,
    which has no LSTM; the warnings it gives say so and are silenced here."""
    decoder = model.decoder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(
            torch.nn.ModuleList([decoder.attention_rnn, decoder.decoder_rnn]), {torch.nn.LSTMCell}, dtype=torch.qint8
        )
    decoder.attention_rnn, decoder.decoder_rnn = quantized


def peak_normalize(wave: np.ndarray) -> np.ndarray:
    """Scale to a peak of PEAK_LEVEL, float32: Griffin-Lim's output level is arbitrary. A mel of one frame
    gives no samples, which stay none."""
    return (wave * PEAK_LEVEL / max(float(np.abs(wave).max(initial=0.0)), 1e-8)).astype(np.float32)


def check_output(path: Path) -> None:
    """Before synthesizing: libsndfile can write 16-bit PCM in the format the extension names, and the
    folder exists (made if need be). OSError when the file system refuses the folder."""
    kind = path.suffix[1:].upper()
    if kind not in soundfile.available_formats() or not soundfile.check_format(kind, SUBTYPE):
        extension = path.suffix or "a name without an extension"
        raise SynthesisError(f"{path}: libsndfile cannot write 16-bit PCM to {extension}; use .wav or .flac")
    # the file system's own words for this ("File exists" or "Not a directory") do not say which path is in the way
    in_the_way = next((folder for folder in (path.parent, *path.parent.parents) if folder.is_file()), None)
    if in_the_way is not None:
        raise SynthesisError(f"{in_the_way}: is a file, not a folder, so {path} cannot be written below it")
    path.parent.mkdir(parents=True, exist_ok=True)


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM, mono, in the format path's extension names; complete or not there (replaced_when_written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replaced_when_written(path) as temporary:
            soundfile.write(temporary, wave, sample_rate, subtype=SUBTYPE, format=path.suffix[1:].upper())
    except soundfile.SoundFileError as error:  # libsndfile's own, for a full disk say
        raise SynthesisError(f"{path}: cannot write it ({error})") from None


def write_log_mel(path: Path, mel: np.ndarray, normalization: str) -> None:
    """The mel as .npy in the NVIDIA/HiFi-GAN convention (to_log_mel); complete or not there."""
    with replaced_when_written(path) as temporary, open(temporary, "wb") as file:
        np.save(file, to_log_mel(mel, normalization))


def to_log_mel(mel: np.ndarray, normalization: str) -> np.ndarray:
    """(frames, n_mels) taco feature -> (n_mels, frames) natural-log mel clamped at 1e-5, the input
    convention of NVIDIA/tacotron2's and HiFi-GAN's vocoders."""
    # (frames, n_mels) -> (n_mels, frames)
    return log_mel(torch.from_numpy(mel), normalization).T.numpy()
