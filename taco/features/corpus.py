"""Reading a corpus in LJSpeech layout: metadata lines, audio paths, and the train/validation split.

`metadata.csv` lines are `id|raw text|normalized text` (LJSpeech) or `id|text`; audio is
`wavs/ID.wav` (or `.flac`). Lines that cannot be used become failures with a reason, never exceptions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Entry:
    """One utterance named by the metadata: its text and where its audio should be."""

    id: str
    text: str
    audio_path: Path


class CorpusError(Exception):
    """The corpus as a whole cannot be read (not one bad line: those become failures)."""


def read_metadata(metadata_path: Path, audio_dir: Path) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Parse a metadata file into entries, and (id, reason) failures for the lines that cannot be used."""
    if not metadata_path.is_file():
        raise CorpusError(f"{metadata_path}: metadata file not found")
    entries: list[Entry] = []
    failures: list[tuple[str, str]] = []
    seen: set[str] = set()
    # utf-8-sig drops a byte-order mark; undecodable bytes become U+FFFD, which the text front end drops
    with open(metadata_path, encoding="utf-8-sig", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("|")
            id_ = fields[0].strip()
            if len(fields) not in (2, 3):
                failures.append((id_ or f"line {number}", f"malformed metadata: line {number} has {len(fields)} |-separated fields, expected 2 or 3"))
            elif not id_ or "/" in id_ or "\\" in id_ or id_.startswith("."):
                failures.append((f"line {number}", f"malformed metadata: line {number} has the invalid id {id_!r}"))
            elif id_ in seen:
                failures.append((id_, f"duplicate id: metadata line {number} repeats it"))
            else:
                seen.add(id_)
                # LJSpeech's third column is the normalized text; fall back to the raw text when it is empty
                text = fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]
                entries.append(Entry(id_, text, find_audio(audio_dir, id_)))
    return entries, failures


def find_audio(audio_dir: Path, id_: str) -> Path:
    """The audio file of `id_`: the first of ID.wav, ID.flac that exists, else the .wav path (reported missing)."""
    for suffix in AUDIO_SUFFIXES:
        path = audio_dir / f"{id_}{suffix}"
        # os.path.isfile, not Path.is_file: an id longer than a file name may be raises OSError from the
        # latter, and one such line would abort reading the whole corpus; loading its audio reports it instead
        if os.path.isfile(path):
            return path
    return audio_dir / f"{id_}{AUDIO_SUFFIXES[0]}"


def random_split(ids: list[str], seed: int, val_fraction: float, val_count: int | None) -> dict[str, str]:
    """id -> "train" or "val", a pure function of the set of ids and the seed.

    `val_count`, when given, wins over `val_fraction`. Ids are sorted first so that the order of the
    metadata lines does not change the split.
    """
    if val_count is None:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        val_count = round(val_fraction * len(ids))
    if not 0 <= val_count < max(len(ids), 1):
        raise ValueError(f"val_count must be in [0, {len(ids)}) for {len(ids)} utterances, got {val_count}")
    order = sorted(ids)
    permutation = np.random.default_rng(seed).permutation(len(order))
    val = {order[i] for i in permutation[:val_count]}
    return {id_: ("val" if id_ in val else "train") for id_ in order}
