"""Shared fixtures: real speech from the bundled flite corpus, small corpora built from it, a micro training
run, a gate rule that makes inference stop where a test wants, and a signal sent at a chosen call."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from taco.pipeline.model import Tacotron2


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two contend with the other core's work (measured 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for the taco subprocesses some tests start
    yield
    torch.set_num_threads(threads)


BUNDLED_CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "ljspeech_flite"


def bundled_lines(count: int) -> list[str]:
    lines = (BUNDLED_CORPUS / "metadata.csv").read_text(encoding="utf-8").splitlines()
    return lines[:count]


@pytest.fixture(scope="session")
def speech() -> tuple[np.ndarray, int]:
    """The first bundled utterance at taco's default rate, as `taco preprocess` reads it: (float32 samples,
    sample rate). The corpus itself is 16 kHz, flite's native rate."""
    from taco.features.audio import load_audio
    from taco.features.mel import FeatureConfig

    first_id = bundled_lines(1)[0].split("|")[0]
    rate = FeatureConfig().sample_rate
    return load_audio(BUNDLED_CORPUS / "wavs" / f"{first_id}.flac", rate), rate


def copy_bundled_corpus(corpus: Path, count: int) -> Path:
    """An LJSpeech-layout copy of the first `count` bundled utterances in `corpus`."""
    (corpus / "wavs").mkdir(parents=True)
    lines = bundled_lines(count)
    for line in lines:
        id_ = line.split("|")[0]
        shutil.copy(BUNDLED_CORPUS / "wavs" / f"{id_}.flac", corpus / "wavs")
    (corpus / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus


@pytest.fixture
def make_corpus(tmp_path):
    """make_corpus(count, name="corpus") -> an LJSpeech-layout copy of the first `count` bundled utterances."""
    return lambda count, name="corpus": copy_bundled_corpus(tmp_path / name, count)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    """A feature store of 10 bundled utterances, 2 of them for validation. Read it, never write into it."""
    from taco.features.preprocess import preprocess

    root = tmp_path_factory.mktemp("small_store")
    corpus = copy_bundled_corpus(root / "corpus", 10)
    preprocess(corpus, root / "store", val_count=2, jobs=1, progress=False)
    return root / "store"


def librosa_mel(samples: np.ndarray, config) -> np.ndarray:
    """The reference linear mel (n_mels, frames) of a FeatureConfig: librosa's Slaney mel of the magnitude STFT."""
    import librosa  # here: only the tests that compare against librosa pay for its import

    return librosa.feature.melspectrogram(
        y=samples, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
        win_length=config.win_length, center=True, pad_mode="reflect", power=1.0,
        n_mels=config.n_mels, fmin=config.f_min, fmax=config.f_max, htk=False, norm="slaney",
    )


# A constructed clip whose default mels clip at both ends of the `db` range: a cosine on FFT bin 10 of 1024
# (215 Hz at 22.05 kHz), so that under the periodic Hann window each frame's spectrum is 3 bins and every
# filter that does not weigh them holds rounding noise (below 1e-6, under the -100 dB floor), with amplitude
# 4 (12 dB over full scale), so that the two filters around 215 Hz reach +24 and +30 dB, over the +20 dB
# ceiling. It starts at a peak and ends at one, so the STFT's reflect padding continues it exactly.
LOUD_COSINE_BIN = 10
LOUD_COSINE_AMPLITUDE = 4.0


def loud_cosine_wav(sample_rate: int = 22050, n_fft: int = 1024) -> bytes:
    """The constructed loud cosine as a float WAV file (which keeps samples beyond full scale)."""
    n = np.arange(20 * n_fft + 1)  # 200 whole periods, peak to peak: 81 frames at hop 256
    samples = LOUD_COSINE_AMPLITUDE * np.cos(2 * np.pi * LOUD_COSINE_BIN * n / n_fft)
    wav = io.BytesIO()
    soundfile.write(wav, samples.astype(np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return wav.getvalue()


def add_utterance(corpus: Path, id_: str, text: str, audio: bytes | None = None) -> None:
    """Append a metadata line, and write `audio` as wavs/ID.wav unless it is None (a missing file)."""
    with open(corpus / "metadata.csv", "a", encoding="utf-8") as metadata:
        metadata.write(f"{id_}|{text}|{text}\n")
    if audio is not None:
        (corpus / "wavs" / f"{id_}.wav").write_bytes(audio)


# A model small enough that a training step takes milliseconds on a CPU.
MICRO = {
    "preset": "tiny",
    "model": {
        "embedding_dim": 32, "encoder_conv_channels": 32, "encoder_lstm_dim": 16, "attention_rnn_dim": 48,
        "attention_dim": 24, "location_filters": 8, "location_kernel_size": 7, "prenet_dims": [32, 32],
        "decoder_rnn_dim": 48, "postnet_layers": 2, "postnet_channels": 32, "reduction_factor": 2,
        "max_decoder_steps": 40,
    },
    "training": {"batch_frames": 1600, "warmup_steps": 2, "max_steps": 8, "checkpoint_every": 4, "log_every": 1,
                 "num_workers": 0, "griffin_lim_iterations": 2},
}


def stop_after_one_step_per_token(model: Tacotron2) -> None:
    """Replace the decoder's gate with a rule that depends only on the item itself: stop after as many
    steps as the item has tokens. The steps taken so far are the sum of the cumulative attention weights
    (each step's weights sum to 1), and the token count is the sum of the memory mask."""
    real_step, real_project = model.decoder.step, model.decoder.project
    last = {}

    def step(prenet_output, state, memory):
        output, state = real_step(prenet_output, state, memory)
        last["steps_taken"], last["n_tokens"] = state.attention_weights_cum.sum(-1), memory.mask.sum(-1)
        return output, state

    def project(outputs):
        frames, _ = real_project(outputs)
        return frames, torch.where(last["steps_taken"] > last["n_tokens"] - 0.5, 10.0, -10.0)

    model.decoder.step, model.decoder.project = step, project


def micro(**training):
    """The MICRO model and training configs, with training fields replaced by `training`."""
    from taco.pipeline.presets import configs_from

    return configs_from(MICRO | {"training": MICRO["training"] | training})


@pytest.fixture(scope="session")
def micro_run(small_store, tmp_path_factory) -> tuple[Path, dict]:
    """An 8-step MICRO run on `small_store`: (its run folder, train()'s summary). Read it, never write into it."""
    from taco.pipeline.train import train

    run = tmp_path_factory.mktemp("micro_run") / "run"
    summary = train(small_store, run, *micro(), progress=False)
    return run, summary


@pytest.fixture(scope="session")
def micro_checkpoint(micro_run) -> Path:
    """The last checkpoint of the MICRO run: a real, barely trained model."""
    return micro_run[0] / "checkpoints" / "step_00000008.pt"


def signal_on_call(function, number: int, signum: int):
    """`function`, but its call `number` first sends this process `signum` (as Ctrl-C or a scheduler would)."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            os.kill(os.getpid(), signum)  # the handler raises here, before the call
        return function(*args, **kwargs)

    wrapped.calls = calls
    return wrapped
