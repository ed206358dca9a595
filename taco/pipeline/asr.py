"""Speech recognition: the one place where taco turns audio back into words, and scores the words.

The recognizer is pocketsphinx 5 (the optional `bench` extra), whose wheel carries its US English
acoustic model, language model and dictionary: nothing is downloaded. Each utterance is decoded alone and
whole, and the decoder's feature state (cepstral mean, noise estimate) is reset before each one, so a
transcript never depends on the utterance decoded before it.
"""

from __future__ import annotations

import re

import numpy as np
import soxr

from taco.features.text import clean_text

# The rate of pocketsphinx's bundled acoustic model (en-us, 16 kHz).
RECOGNIZER_SAMPLE_RATE = 16000
# Anything but letters and apostrophes separates words: the dictionary spells "don't" with its apostrophe.
_NOT_WORD = re.compile(r"[^a-z']+")


class RecognizerError(Exception):
    """Recognition cannot run; str() is a one-line explanation."""


def _decoder_class():
    """pocketsphinx.Decoder, imported on first use: the package is an optional extra."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise RecognizerError("speech recognition needs pocketsphinx: pip install -e '.[bench]'") from None
    return Decoder


class Recognizer:
    """pocketsphinx with its bundled US English model; `transcribe` one utterance at a time."""

    def __init__(self):
        # loglevel FATAL: pocketsphinx otherwise writes hundreds of lines per decoder to stderr
        self._decoder = _decoder_class()(samprate=RECOGNIZER_SAMPLE_RATE, loglevel="FATAL")

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> list[str]:
        """(samples,) float audio in [-1, 1] at `sample_rate` -> the recognized words, lowercase. An empty
        waveform (a model that stopped after one frame) says nothing."""
        if wave.ndim != 1:
            raise ValueError(f"transcribe needs a mono waveform, got shape {wave.shape}")
        if len(wave) == 0:
            return []
        if sample_rate != RECOGNIZER_SAMPLE_RATE:
            wave = soxr.resample(wave, sample_rate, RECOGNIZER_SAMPLE_RATE, quality="HQ")
        pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)
        # a fresh cepstral mean and noise estimate: without it the previous utterance shifts the scores
        # (measured: B after A scored 0.450, B alone 0.454); with it B after A is B alone exactly
        self._decoder.reinit_feat()
        self._decoder.start_utt()
        # the whole clip in one call: pocketsphinx crashed when fed pieces of a clip
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr.split() if hypothesis is not None else []

    def knows(self, word: str) -> bool:
        """Whether the recognizer's dictionary has `word` (it can never recognize one it lacks)."""
        return self._decoder.lookup_word(word) is not None

    def out_of_vocabulary(self, references: list[list[str]]) -> list[str]:
        """The distinct reference words the dictionary lacks, sorted: each costs at least one edit."""
        return sorted({word for words in references for word in words if not self.knows(word)})


def reference_words(text: str, cleaners: str = "english") -> list[str]:
    """Corpus text -> the words a listener should hear: taco's cleaners (numbers spelled out, lowercase),
    punctuation stripped."""
    return [word.strip("'") for word in _NOT_WORD.split(clean_text(text, cleaners)) if word.strip("'")]


def word_edits(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance on words: the fewest substitutions, insertions and deletions from one to the other."""
    # previous[j]: edits between the reference so far and hypothesis[:j]
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, start=1):
        current = [i]
        for j, heard in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard)))
        previous = current
    return previous[-1]


def word_error_rate(references: list[list[str]], hypotheses: list[list[str]]) -> dict:
    """Corpus-level WER (total edits / total reference words) and each utterance's.

    Returns {"wer", "edits", "words", "per_utterance": [{"edits", "words", "wer"}, ...]}; an utterance
    with no reference words has the WER of its insertions (0 or inf).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    rows = []
    for reference, hypothesis in zip(references, hypotheses):
        edits = word_edits(reference, hypothesis)
        rows.append({"edits": edits, "words": len(reference), "wer": _rate(edits, len(reference))})
    edits, words = sum(row["edits"] for row in rows), sum(row["words"] for row in rows)
    return {"wer": _rate(edits, words), "edits": edits, "words": words, "per_utterance": rows}


def _rate(edits: int, words: int) -> float:
    if words == 0:
        return 0.0 if edits == 0 else float("inf")
    return edits / words
