"""The feature store format: shard writer, shard summaries, the store reader, fingerprint and summary.

A store is a folder:

    store.json     how it was made: configs, symbol table, fingerprint, split, stats, versions, status, and
                   each shard's name and SHA-256 checksum
    index.tsv      one row per utterance: id, shard, row, n_frames, n_tokens, split
    failures.tsv   one row per skipped utterance: id, reason
    shards/NNNNN.h5

Each shard holds its utterances as one concatenated array per kind plus offsets (never one dataset per
utterance, never variable-length types), so reading an utterance is two slices. A shard is written
under a temporary name and renamed when complete: a file with a shard's final name is always whole.
Its checksum, taken once the file is written, lets `taco store-info --verify` find bytes changed since.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from taco.errors import one_line
from taco.features.mel import FeatureConfig, clip_limits
from taco.features.text import TextConfig
from taco.files import replaced_when_written

# 2: the `db` range is [-100, +20] dB (was [-100, 0]), and shards count the bins clipped at each end
# 3: store.json's "shards" maps each shard's name to its SHA-256 checksum (was a list of names)
FORMAT_VERSION = 3
STORE_FILE = "store.json"
INDEX_FILE = "index.tsv"
FAILURES_FILE = "failures.tsv"
SHARD_DIR = "shards"
# what shard_name() writes: a name that stays inside SHARD_DIR, whatever a damaged index says
SHARD_NAME = re.compile(r"[0-9]{5,}\.h5")
# bytes hashed at a time: a shard is read once, never held whole
CHECKSUM_BLOCK = 1 << 20
SPLITS = ("train", "val")
INDEX_COLUMNS = ("id", "shard", "row", "n_frames", "n_tokens", "split")
FAILURES_COLUMNS = ("id", "reason")
# what store.json holds once its preprocess run has finished
STORE_KEYS = ("format_version", "complete", "fingerprint", "feature_config", "text_config", "symbols", "max_seconds",
              "split", "corpus", "library_versions", "shards", "stats", "dropped_characters", "unknown_words", "created")
# The remedies a damaged store's errors name. A re-run finds every shard complete and writes the index files again.
REMAKE = "re-run taco preprocess with --overwrite, or into a new folder"
REBUILD = "run the taco preprocess that made the store again: it rebuilds the index files from the shards"


class StoreError(Exception):
    """A store that cannot be read or written as asked; str() is a one-line explanation."""


@contextmanager
def writing(path: Path, temporary: Path | None = None):
    """Turn an OSError while writing `path` (a full or read-only disk, a path below a file) into a StoreError
    naming `path` and the reason, after removing the half-written `temporary`: a full disk wants its space."""
    try:
        yield
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write ({one_line(error)})") from None


def fingerprint(feature_config: FeatureConfig, text_config: TextConfig, symbols: list[str], max_seconds: float) -> str:
    """Hash of everything that changes what the shards hold. Equal fingerprints mean reusable shards."""
    recipe = {
        "format_version": FORMAT_VERSION,
        "feature_config": feature_config.to_dict(),
        "text_config": text_config.to_dict(),
        "symbols": symbols,
        "max_seconds": max_seconds,
    }
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def shard_name(number: int) -> str:
    return f"{number:05d}.h5"


def file_checksum(path: Path) -> str:
    """SHA-256 of the file's bytes, hex: what `sha256sum` prints, so a shard can be checked by hand too."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHECKSUM_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Utterance:
    """One processed utterance as a shard task hands it to the writer."""

    id: str
    tokens: np.ndarray  # (n_tokens,) integer token IDs
    mel: np.ndarray  # (n_frames, n_mels) float32 normalized mel


@dataclass
class ShardSummary:
    """What a shard holds, without its mels: enough to build the index, the stats and the report."""

    name: str
    fingerprint: str
    checksum: str  # file_checksum of the shard file
    task_ids: list[str]  # every utterance the task was given, kept or failed
    ids: list[str]
    n_frames: np.ndarray  # (n,) int64
    n_tokens: np.ndarray  # (n,) int64
    mel_sum: np.ndarray  # (n, n_mels) float64 per-utterance sum over frames, for merged stats
    mel_sq_sum: np.ndarray  # (n, n_mels) float64 per-utterance sum of squares
    bins_at_floor: np.ndarray  # (n,) int64 per-utterance count of mel bins clipped at the normalization's floor
    bins_at_ceiling: np.ndarray  # (n,) int64 the same at its ceiling (always 0 for `log`, which has none)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    dropped_characters: dict[str, int] = field(default_factory=dict)
    unknown_words: dict[str, int] = field(default_factory=dict)  # phonemes: words spelled out -> count


def _bytes_array(strings: list[str]) -> np.ndarray:
    # fixed-length byte strings: HDF5's simplest string type, no variable-length machinery
    return np.array([s.encode("utf-8") for s in strings], dtype=bytes) if strings else np.zeros(0, dtype="S1")


def utf8_strings(array: np.ndarray) -> list[str]:
    """A shard's array of UTF-8 bytes (HDF5 holds no variable-length types here) as Python strings."""
    return [b.decode("utf-8") for b in array]


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def write_shard(
    path: Path,
    fingerprint: str,
    task_ids: list[str],
    utterances: list[Utterance],
    failures: list[tuple[str, str]],
    dropped_characters: dict[str, int],
    unknown_words: dict[str, int],
    features: FeatureConfig,
) -> ShardSummary:
    """Write one shard atomically (temporary name, fsync, rename) and return its summary."""
    n_mels = features.n_mels
    mels = [u.mel.astype(np.float32, copy=False) for u in utterances]
    n_frames = np.array([len(m) for m in mels], dtype=np.int64)
    n_tokens = np.array([len(u.tokens) for u in utterances], dtype=np.int64)
    # (n, frames_i, n_mels) -> (n, n_mels): float64 sums so that merging many shards loses nothing
    mel_sum = np.array([m.sum(axis=0, dtype=np.float64) for m in mels]).reshape(-1, n_mels)
    mel_sq_sum = np.array([np.square(m, dtype=np.float64).sum(axis=0) for m in mels]).reshape(-1, n_mels)
    # (n, frames_i, n_mels) -> (n,): bins the normalization held at its floor, and at its ceiling (`log` has none)
    floor, ceiling = clip_limits(features.normalization)
    bins_at_floor = np.array([np.count_nonzero(m <= floor) for m in mels], dtype=np.int64)
    bins_at_ceiling = np.array([0 if ceiling is None else np.count_nonzero(m >= ceiling) for m in mels], dtype=np.int64)
    ids = [u.id for u in utterances]

    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with writing(path, temporary):
        with h5py.File(temporary, "w") as shard:
            shard.attrs["format_version"] = FORMAT_VERSION
            shard.attrs["fingerprint"] = fingerprint
            shard.attrs["dropped_characters"] = json.dumps(dropped_characters, sort_keys=True)
            shard.attrs["unknown_words"] = json.dumps(unknown_words, sort_keys=True)
            shard["task_ids"] = _bytes_array(task_ids)
            shard["ids"] = _bytes_array(ids)
            # (n, frames_i, n_mels) -> (sum of frames, n_mels)
            shard["mels"] = np.concatenate(mels) if mels else np.zeros((0, n_mels), np.float32)
            shard["mel_offsets"] = _offsets(n_frames)
            shard["tokens"] = np.concatenate([u.tokens for u in utterances]).astype(np.int32) if utterances else np.zeros(0, np.int32)
            shard["token_offsets"] = _offsets(n_tokens)
            shard["mel_sum"] = mel_sum
            shard["mel_sq_sum"] = mel_sq_sum
            shard["bins_at_floor"] = bins_at_floor
            shard["bins_at_ceiling"] = bins_at_ceiling
            shard["failure_ids"] = _bytes_array([id_ for id_, _ in failures])
            shard["failure_reasons"] = _bytes_array([reason for _, reason in failures])
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        checksum = file_checksum(temporary)
        os.replace(temporary, path)
    return ShardSummary(path.name, fingerprint, checksum, task_ids, ids, n_frames, n_tokens, mel_sum, mel_sq_sum,
                        bins_at_floor, bins_at_ceiling, failures, dropped_characters, unknown_words)


def read_shard_summary(path: Path) -> ShardSummary:
    """Everything about a shard but its mels and tokens. Raises StoreError if it cannot be read."""
    try:
        with h5py.File(path, "r") as shard:
            return ShardSummary(
                name=path.name,
                fingerprint=str(shard.attrs["fingerprint"]),
                checksum=file_checksum(path),
                task_ids=utf8_strings(shard["task_ids"][:]),
                ids=utf8_strings(shard["ids"][:]),
                n_frames=np.diff(shard["mel_offsets"][:]),
                n_tokens=np.diff(shard["token_offsets"][:]),
                mel_sum=shard["mel_sum"][:],
                mel_sq_sum=shard["mel_sq_sum"][:],
                bins_at_floor=shard["bins_at_floor"][:],
                bins_at_ceiling=shard["bins_at_ceiling"][:],
                failures=list(zip(utf8_strings(shard["failure_ids"][:]), utf8_strings(shard["failure_reasons"][:]))),
                dropped_characters=json.loads(shard.attrs["dropped_characters"]),
                unknown_words=json.loads(shard.attrs["unknown_words"]),
            )
    except (OSError, KeyError) as error:
        raise StoreError(f"{path}: unreadable shard ({error})") from None


def read_store_json(store_dir: Path) -> dict:
    """store.json as a dict; a StoreError if the folder has none or it is damaged. Its keys are not checked."""
    path = store_dir / STORE_FILE
    if not path.is_file():
        raise StoreError(f"{store_dir}: not a taco feature store (no {STORE_FILE})")
    try:
        info = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise StoreError(f"{path}: corrupt store description ({one_line(error)}); {REMAKE}") from None
    if not isinstance(info, dict):
        raise StoreError(f"{path}: not a store description (a JSON {type(info).__name__}, not an object); {REMAKE}")
    return info


def write_json_atomically(path: Path, data: dict) -> None:
    with writing(path), replaced_when_written(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_tsv_atomically(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with writing(path), replaced_when_written(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.writer(file, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


def read_tsv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a store's TSV file written with these columns; a StoreError if it is missing, cut short or
    holds lines of other columns."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as error:  # ValueError: not UTF-8
        raise StoreError(f"{path}: cannot be read ({one_line(error)}); {REBUILD}") from None
    # the writer ends every line, the header's too, with a newline: a file that does not was cut
    if not text.endswith("\n"):
        raise StoreError(f"{path}: cut short (its last line ends mid-line); {REBUILD}")
    header, *lines = csv.reader(io.StringIO(text), delimiter="\t")
    for number, fields in enumerate([header, *lines], start=1):
        if len(fields) != len(columns) or (number == 1 and tuple(fields) != columns):
            raise StoreError(f"{path}: line {number} is not a row of {', '.join(columns)}; {REBUILD}")
    return [dict(zip(columns, fields)) for fields in lines]


class _OpenShard(NamedTuple):
    file: h5py.File
    mels: h5py.Dataset  # read a slice at a time
    mel_offsets: np.ndarray
    tokens: np.ndarray
    token_offsets: np.ndarray


def _lengths_agree(offsets: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> bool:
    """Whether a shard's offsets give these rows these lengths: a cheap guard against a shard damaged since."""
    return rows.max() + 1 < len(offsets) and np.array_equal(np.diff(offsets)[rows], lengths)


class FeatureStore:
    """Reads a finished store. Lengths and splits come from the index alone; shards open on first use.

    Open shard files are per process: after a fork (DataLoader workers) or unpickling, each process
    opens its own handles, so one store object can be handed to many workers safely.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.info = read_store_json(self.path)
        if self.info.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path}: store format {self.info.get('format_version')} but this taco reads format "
                f"{FORMAT_VERSION}; {REMAKE}"
            )
        if not self.info.get("complete"):
            raise StoreError(f"{self.path}: incomplete store (its preprocess run did not finish); re-run it")
        missing = [key for key in STORE_KEYS if key not in self.info]
        if missing:
            raise StoreError(f"{self.path / STORE_FILE}: lacks {', '.join(missing)}; {REMAKE}")
        try:  # here, so that every later read of the configs (the properties below) works
            FeatureConfig.from_dict(self.info["feature_config"])
            TextConfig.from_dict(self.info["text_config"])
        except ValueError as error:
            raise StoreError(f"{self.path / STORE_FILE}: {error} (made by another taco version?); {REMAKE}") from None
        for name in self.info["shards"]:
            if not SHARD_NAME.fullmatch(name):
                raise StoreError(f"{self.path / STORE_FILE}: {name!r} is not a shard name; {REMAKE}")
        rows = read_tsv(self.path / INDEX_FILE, INDEX_COLUMNS)
        for line, row in enumerate(rows, start=2):
            if row["shard"] not in self.info["shards"]:
                raise StoreError(f"{self.path / INDEX_FILE}: line {line} names the shard {row['shard']!r}, which is not "
                                 f"one of the store's shards; {REBUILD}")
        self.ids = [row["id"] for row in rows]
        self.shard_names = sorted({row["shard"] for row in rows})
        shard_number = {name: number for number, name in enumerate(self.shard_names)}
        self.shards = np.array([shard_number[row["shard"]] for row in rows], dtype=np.int64)
        self.rows = np.array([int(row["row"]) for row in rows], dtype=np.int64)
        self.n_frames = np.array([int(row["n_frames"]) for row in rows], dtype=np.int64)
        self.n_tokens = np.array([int(row["n_tokens"]) for row in rows], dtype=np.int64)
        self.splits = np.array([row["split"] for row in rows])
        self._open_shards: dict[int, _OpenShard] = {}
        self._owner_pid = os.getpid()

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.info["feature_config"])

    @property
    def text_config(self) -> TextConfig:
        return TextConfig.from_dict(self.info["text_config"])

    @property
    def symbols(self) -> list[str]:
        return self.info["symbols"]

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]

    @functools.cached_property  # the index never changes while the store is open; checkpoints record it each save
    def content_fingerprint(self) -> str:
        """Hash of which utterances the store holds: ids, lengths and splits. Two stores made with the same
        configs from different corpora share `fingerprint` but not this."""
        content = [self.ids, self.n_frames.tolist(), self.n_tokens.tolist(), self.splits.tolist()]
        return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.ids)

    def split_indices(self, split: str) -> np.ndarray:
        """Positions in the index of the utterances in `split` ("train" or "val")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.splits == split)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (n_tokens,) int64, mel (n_frames, n_mels) float32) of the utterance at `index`."""
        shard = self._shard(int(self.shards[index]))
        row = self.rows[index]
        tokens = shard.tokens[shard.token_offsets[row] : shard.token_offsets[row + 1]].astype(np.int64)
        mel = shard.mels[shard.mel_offsets[row] : shard.mel_offsets[row + 1]]
        return tokens, mel

    def _shard(self, number: int) -> _OpenShard:
        if os.getpid() != self._owner_pid:
            # a forked worker: the parent's HDF5 handles are not safe to share, so open our own
            self._open_shards = {}
            self._owner_pid = os.getpid()
        if number not in self._open_shards:
            self._open_shards[number] = self._open_shard(number)
        return self._open_shards[number]

    def _open_shard(self, number: int) -> _OpenShard:
        path = self.path / SHARD_DIR / self.shard_names[number]
        try:
            file = h5py.File(path, "r")
            # offsets and tokens are small: in memory they save an HDF5 read per item (measured 0.35 -> 0.03 ms)
            shard = _OpenShard(file, file["mels"], file["mel_offsets"][:], file["tokens"][:], file["token_offsets"][:])
            indexed = self.shards == number
            if not (_lengths_agree(shard.mel_offsets, self.rows[indexed], self.n_frames[indexed])
                    and _lengths_agree(shard.token_offsets, self.rows[indexed], self.n_tokens[indexed])):
                file.close()
                raise ValueError("its offsets disagree with the index")
        except (OSError, KeyError, ValueError) as error:
            raise StoreError(f"{path}: damaged shard ({one_line(error)}); run taco store-info --verify {self.path}") from None
        return shard

    def check_shards(self) -> None:
        """Open each shard as reading an item does, then close them all: a StoreError names the first damaged one.

        Training calls this before its DataLoader workers start: an error in a worker reaches the user inside the
        worker's traceback, this one in one line.
        """
        try:
            for number in range(len(self.shard_names)):
                self._shard(number)
        finally:
            self.close()

    def close(self) -> None:
        for shard in self._open_shards.values():
            shard.file.close()
        self._open_shards = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open_shards"] = {}  # handles never travel between processes
        return state
