"""Stored utterances a checkpoint runs on: a store that matches it, the utterances picked from it, and the
corpus lines (text and recording) they were made from."""

from __future__ import annotations

import os
from pathlib import Path

from taco.features.corpus import Entry, read_metadata
from taco.features.preprocess import DEFAULT_AUDIO_DIR
from taco.features.store import FeatureStore
from taco.pipeline.synth import Synthesizer

# The store records the corpus folder and its metadata files, not the audio folder: the default is assumed.
AUDIO_DIR = DEFAULT_AUDIO_DIR


class SelectionError(Exception):
    """The stored utterances asked for cannot be used; str() is a one-line explanation."""


def open_store(store_dir: str | os.PathLike | None, checkpoint_path, synthesizer: Synthesizer) -> FeatureStore:
    """The store in `store_dir`, checked to hold the features and symbols the checkpoint was trained on."""
    if store_dir is None:
        raise SelectionError("stored utterances need --store")
    store = FeatureStore(store_dir)
    if store.symbols != synthesizer.symbols or store.feature_config != synthesizer.feature_config:
        raise SelectionError(
            f"{store.path} was made with other features or symbols than {checkpoint_path} was trained on; "
            "its mels would mean something else to the model"
        )
    return store


def select_positions(store: FeatureStore, ids: list[str] | None, split: str | None, limit: int | None) -> list[int]:
    """Index positions of `ids`, or of the `split` (the first `limit` of it)."""
    if ids is not None:
        position = {id_: i for i, id_ in enumerate(store.ids)}
        missing = [id_ for id_ in ids if id_ not in position]
        if missing:
            raise SelectionError(f"{store.path}: no utterance {', '.join(missing)}")
        return [position[id_] for id_ in ids]
    positions = store.split_indices(split).tolist()
    if not positions:
        raise SelectionError(f"{store.path}: the {split} split is empty")
    return positions[:limit] if limit else positions


def store_corpus(store: FeatureStore, corpus_dir: str | os.PathLike | None = None) -> dict[str, Entry]:
    """id -> corpus entry (text, audio path) of every line the store was made from.

    The corpus is `corpus_dir`, else the folder store.json records; its metadata files are the ones the
    store's split recipe names, and its audio is in `wavs/`.
    """
    folder = Path(corpus_dir if corpus_dir is not None else store.info["corpus"])
    recipe = store.info["split"]
    names = [recipe["metadata"]] if recipe["method"] == "random" else [recipe["train_metadata"], recipe["val_metadata"]]
    entries: dict[str, Entry] = {}
    for name in names:
        if not (folder / name).is_file():
            raise SelectionError(f"{folder / name} is not there: name the corpus of {store.path} with --corpus DIR")
        found, _ = read_metadata(folder / name, folder / AUDIO_DIR)
        entries |= {entry.id: entry for entry in found}
    return entries
