"""Can the speech of a checkpoint be understood? The word error rate of an offline recognizer on the
validation lines of a store, for four sources of the same sentences:

    recordings          the corpus audio: the recognizer's own floor on this voice
    target_griffin_lim  the stored target mels through Griffin-Lim, as `taco synth` vocodes: the vocoder's cost
    teacher_forced      the checkpoint's postnet mels given the target mels (what training sees), vocoded alike
    free_running        `Synthesizer.synthesize` of the corpus text (what a user hears)

Used by benchmarks/intelligibility.py, benchmarks/alignment.py and scripts/demo.sh.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from taco.features.audio import load_audio
from taco.pipeline.asr import Recognizer, reference_words, word_error_rate
from taco.pipeline.batching import collate, to_device
from taco.pipeline.stored import SelectionError, open_store, select_positions, store_corpus
from taco.pipeline.synth import SynthConfig, Synthesizer
from taco.progress import progress_bar

SOURCES = ("recordings", "target_griffin_lim", "teacher_forced", "free_running")


def evaluate_intelligibility(
    checkpoint_path: str | os.PathLike,
    store_dir: str | os.PathLike,
    *,
    corpus_dir: str | os.PathLike | None = None,
    split: str = "val",
    limit: int | None = None,
    sources: tuple[str, ...] = SOURCES,
    config: SynthConfig = SynthConfig(),
    device: str | None = None,
    recognizer: Recognizer | None = None,
    progress: bool = False,
    int8: bool = False,
) -> dict:
    """The recognizer's word error rate on the `split` lines of the store (the first `limit`) for each of
    `sources` (a subset of SOURCES).

    Returns {"utterances", "wer": {source: corpus-level WER}, "edits": {source: word edits}, "words",
    "out_of_vocabulary": reference words the recognizer's dictionary lacks, "rows": [{"id", "reference",
    SOURCE: recognized words, SOURCE_wer}, ...]}, and with free_running also "duration_ratio" (mean of
    synthesized / recorded frames) and "hit_step_limit" (lines cut at the decoder's step limit).
    `corpus_dir` overrides the corpus folder that store.json records; `int8` scores the model as
    `taco synth --int8` runs it.
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise ValueError(f"sources must be some of {SOURCES}, got {tuple(sources)}")
    recognizer = recognizer or Recognizer()
    synthesizer = Synthesizer(checkpoint_path, device, int8=int8)
    store = open_store(store_dir, checkpoint_path, synthesizer)
    positions = select_positions(store, None, split, limit)
    ids = [store.ids[position] for position in positions]
    corpus = store_corpus(store, corpus_dir)
    missing = [id_ for id_ in ids if id_ not in corpus]
    if missing:
        raise SelectionError(f"the corpus of {store.path} has no line {', '.join(missing[:5])}")
    texts = [corpus[id_].text for id_ in ids]
    references = [reference_words(text, synthesizer.text_config.cleaners) for text in texts]
    items = [store[position] for position in positions]
    sample_rate = synthesizer.feature_config.sample_rate

    result = {"utterances": len(ids), "wer": {}, "edits": {}, "words": sum(map(len, references)),
              "out_of_vocabulary": recognizer.out_of_vocabulary(references)}
    rows = [{"id": id_, "reference": " ".join(words)} for id_, words in zip(ids, references)]
    for source in sources:
        if source == "recordings":
            waves = [load_audio(corpus[id_].audio_path, sample_rate) for id_ in ids]
        elif source == "target_griffin_lim":
            waves = [vocode_mel(synthesizer, mel, config) for _, mel in items]
        elif source == "teacher_forced":
            waves = teacher_forced_waves(synthesizer, items, config)
        else:
            utterances = synthesizer.synthesize(texts, config, progress=progress)
            waves = [utterance.wave for utterance in utterances]
            result["duration_ratio"] = float(np.mean([len(u.mel) / len(mel) for u, (_, mel) in zip(utterances, items)]))
            result["hit_step_limit"] = sum(utterance.hit_step_limit for utterance in utterances)
        heard = [recognizer.transcribe(wave, sample_rate)
                 for wave in progress_bar(waves, desc=f"recognize {source}", unit="line", disable=not progress)]
        scores = word_error_rate(references, heard)
        result["wer"][source], result["edits"][source] = scores["wer"], scores["edits"]
        for row, words, line in zip(rows, heard, scores["per_utterance"]):
            row[source], row[f"{source}_wer"] = " ".join(words), line["wer"]
    result["rows"] = rows
    return result


def evaluate_seeds(checkpoint_path: str | os.PathLike, store_dir: str | os.PathLike, seeds: int, *,
                   sources: tuple[str, ...] = ("teacher_forced", "free_running"), config: SynthConfig = SynthConfig(),
                   first: dict | None = None, **options) -> list[dict]:
    """evaluate_intelligibility of `sources` with the prenet's dropout seeded config.seed, config.seed + 1, ...:
    one result per seed, `seeds` in all. The model's rows move with the seed (free-running WER by up to 0.1 on
    15 lines), so a comparison of models wants several. `first`, when given, is the result of the first seed,
    already made; `options` go to evaluate_intelligibility as they are."""
    runs = [] if first is None else [first]
    for seed in range(config.seed + len(runs), config.seed + seeds):
        runs.append(evaluate_intelligibility(checkpoint_path, store_dir, sources=sources,
                                             config=dataclasses.replace(config, seed=seed), **options))
    return runs


@torch.no_grad()
def teacher_forced_waves(synthesizer: Synthesizer, items: list[tuple[np.ndarray, np.ndarray]],
                         config: SynthConfig) -> list[np.ndarray]:
    """The checkpoint's postnet mels given each (tokens, target mel), vocoded as `taco synth` vocodes."""
    torch.manual_seed(config.seed)  # the prenet's dropout stays on: the seed makes a run repeatable
    waves = []
    for start in range(0, len(items), config.batch_size):
        batch = collate(items[start : start + config.batch_size], synthesizer.model_config.reduction_factor)
        batch = to_device(batch, synthesizer.device)
        output = synthesizer.model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"])
        waves += synthesizer.vocode(output.mels_postnet, batch["mel_lens"].tolist(), config)
    return waves


def vocode_mel(synthesizer: Synthesizer, mel: np.ndarray, config: SynthConfig) -> np.ndarray:
    """(frames, n_mels) normalized mel -> waveform, as `taco synth` vocodes."""
    # (frames, n_mels) -> (1, frames, n_mels)
    [wave] = synthesizer.vocode(torch.from_numpy(np.asarray(mel))[None].to(synthesizer.device), [len(mel)], config)
    return wave


def format_intelligibility(result: dict) -> str:
    """A markdown table of the corpus-level WER of each source, the duration ratio and the OOV words."""
    lines = ["| source | WER | edits / words |", "| --- | ---: | ---: |"]
    for source, wer in result["wer"].items():
        lines.append(f"| {source} | {wer:.3f} | {result['edits'][source]} / {result['words']} |")
    if "duration_ratio" in result:
        lines.append(f"\nfree-running duration / recording: {result['duration_ratio']:.2f} (mean of "
                     f"{result['utterances']} lines); {result['hit_step_limit']} hit the decoder's step limit")
    oov = result["out_of_vocabulary"]
    lines.append(f"reference words the recognizer's dictionary lacks ({len(oov)}): {', '.join(oov) or '-'}")
    return "\n".join(lines)
