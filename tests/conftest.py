"""Shared fixtures: real speech from the bundled espeak-ng corpus, and small corpora built from it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two contend with the other core's work (measured 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for the taco subprocesses some tests start
    yield
    torch.set_num_threads(threads)


BUNDLED_CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "ljspeech_espeak"


def bundled_lines(count: int) -> list[str]:
    lines = (BUNDLED_CORPUS / "metadata.csv").read_text(encoding="utf-8").splitlines()
    return lines[:count]


@pytest.fixture(scope="session")
def speech() -> tuple[np.ndarray, int]:
    """The first bundled utterance: (float32 samples, sample rate)."""
    first_id = bundled_lines(1)[0].split("|")[0]
    samples, rate = soundfile.read(BUNDLED_CORPUS / "wavs" / f"{first_id}.flac", dtype="float32")
    return samples, rate


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


def add_utterance(corpus: Path, id_: str, text: str, audio: bytes | None = None) -> None:
    """Append a metadata line, and write `audio` as wavs/ID.wav unless it is None (a missing file)."""
    with open(corpus / "metadata.csv", "a", encoding="utf-8") as metadata:
        metadata.write(f"{id_}|{text}|{text}\n")
    if audio is not None:
        (corpus / "wavs" / f"{id_}.wav").write_bytes(audio)
