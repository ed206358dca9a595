"""What a feature store holds, as a plain dict (for `--json` and notebooks) and as text; and its verification."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from taco.errors import one_line
from taco.features.mel import clip_limits
from taco.features.store import (FAILURES_COLUMNS, FAILURES_FILE, SHARD_DIR, SPLITS, FeatureStore, file_checksum, read_tsv,
                                 utf8_strings)

# Unknown words named in the text summary, most frequent first: a large corpus has many names and rare
# words, and a wall of them would bury the rest; store.json and --json hold them all.
LISTED_UNKNOWN_WORDS = 20


def summarize(store_dir: str | Path, verify: bool = False) -> dict:
    """Counts per split, hours, failures by reason, clipped mel bins, configs and fingerprint of a finished store.

    With `verify`, every shard is read in full and checked against its checksum and the index; the problems
    found are listed under "problems" (an empty list means the store is sound).
    """
    store = FeatureStore(store_dir)
    info = store.info
    seconds_per_frame = info["feature_config"]["hop_length"] / info["feature_config"]["sample_rate"]
    failures = read_tsv(store.path / FAILURES_FILE, FAILURES_COLUMNS)
    summary = {
        "store": str(store.path),
        "fingerprint": store.fingerprint,
        "format_version": info["format_version"],
        "utterances": {split: int(np.sum(store.splits == split)) for split in SPLITS},
        "hours": {split: float(store.n_frames[store.splits == split].sum() * seconds_per_frame / 3600) for split in SPLITS},
        "frames": {split: int(store.n_frames[store.splits == split].sum()) for split in SPLITS},
        "tokens": {split: int(store.n_tokens[store.splits == split].sum()) for split in SPLITS},
        "shards": len(info["shards"]),
        "failures": [{"id": row["id"], "reason": row["reason"]} for row in failures],
        # "unreadable audio: Format not recognised." counts as "unreadable audio"
        "failures_by_reason": dict(Counter(row["reason"].split(":")[0] for row in failures).most_common()),
        "dropped_characters": info["dropped_characters"],
        # most frequent first: the top of the list says which words are worth a pronunciation in braces.
        # Absent from stores made before the phonemes front end.
        "unknown_words": dict(sorted(info.get("unknown_words", {}).items(), key=lambda item: (-item[1], item[0]))),
        "clipped": clipped_shares(info),
        "split": info["split"],
        "max_seconds": info["max_seconds"],
        "feature_config": info["feature_config"],
        "text_config": info["text_config"],
        "library_versions": info["library_versions"],
        "created": info["created"],
    }
    if verify:
        summary["problems"] = verify_store(store)
    return summary


def clipped_shares(info: dict) -> dict:
    """Shares of the training mel bins clipped at the normalization's floor and ceiling (None: `log` has none)."""
    stats = info["stats"]
    bins = max(stats["frames"] * info["feature_config"]["n_mels"], 1)
    _, ceiling = clip_limits(info["feature_config"]["normalization"])
    return {
        "floor": stats["bins_at_floor"] / bins,
        "ceiling": None if ceiling is None else stats["bins_at_ceiling"] / bins,
    }


def verify_store(store: FeatureStore) -> list[str]:
    """Read every shard and compare it with the index: checksum, ids, lengths, shapes, fingerprint, finite values."""
    problems = []
    n_mels = store.feature_config.n_mels
    n_symbols = len(store.symbols)
    for name, checksum in store.info["shards"].items():
        path = store.path / SHARD_DIR / name
        # a shard whose utterances all failed holds no index rows
        number = store.shard_names.index(name) if name in store.shard_names else -1
        indexed = np.flatnonzero(store.shards == number)
        try:
            if file_checksum(path) != checksum:
                problems.append(f"{name}: content differs from the checksum recorded when it was written")
            with h5py.File(path, "r") as shard:
                problems += _shard_problems(store, name, shard, indexed, n_mels, n_symbols)
        except Exception as error:  # h5py raises KeyError, TypeError, ValueError... for damaged structures
            problems.append(f"{name}: cannot be read ({one_line(error)})")
    return problems


def _shard_problems(store, name, shard, indexed, n_mels, n_symbols) -> list[str]:
    problems = []
    if shard.attrs["fingerprint"] != store.fingerprint:
        problems.append(f"{name}: fingerprint {shard.attrs['fingerprint']} differs from the store's {store.fingerprint}")
    ids = utf8_strings(shard["ids"][:])
    if ids != [store.ids[i] for i in indexed] or list(store.rows[indexed]) != list(range(len(ids))):
        problems.append(f"{name}: utterance ids differ from the index")
        return problems
    mel_offsets, token_offsets = shard["mel_offsets"][:], shard["token_offsets"][:]
    mels, tokens = shard["mels"][:], shard["tokens"][:]
    if not np.array_equal(np.diff(mel_offsets), store.n_frames[indexed]):
        problems.append(f"{name}: mel lengths differ from the index")
    if not np.array_equal(np.diff(token_offsets), store.n_tokens[indexed]):
        problems.append(f"{name}: token lengths differ from the index")
    if mels.shape != (mel_offsets[-1], n_mels):
        problems.append(f"{name}: mels have shape {mels.shape}, expected ({mel_offsets[-1]}, {n_mels})")
    if len(tokens) != token_offsets[-1]:
        problems.append(f"{name}: {len(tokens)} tokens, offsets say {token_offsets[-1]}")
    if not np.isfinite(mels).all():
        problems.append(f"{name}: mels hold NaN or infinite values")
    if len(tokens) and not (0 <= tokens.min() and tokens.max() < n_symbols):
        problems.append(f"{name}: token ids outside the symbol table of {n_symbols}")
    return problems


def format_summary(summary: dict) -> str:
    """The summary as the few lines a person wants to read after preprocessing."""
    lines = [f"store        {summary['store']}  (fingerprint {summary['fingerprint']}, {summary['shards']} shards)"]
    for split in SPLITS:
        lines.append(
            f"{split:<12} {summary['utterances'][split]:>7} utterances  {summary['hours'][split]:8.3f} h  "
            f"{summary['frames'][split]:>10} frames  {summary['tokens'][split]:>9} tokens"
        )
    n_failed = len(summary["failures"])
    reasons = ", ".join(f"{reason}: {count}" for reason, count in summary["failures_by_reason"].items())
    lines.append(f"skipped      {n_failed:>7}" + (f"  ({reasons}; see failures.tsv)" if n_failed else ""))
    if summary["dropped_characters"]:
        dropped = ", ".join(f"{char!r}: {count}" for char, count in summary["dropped_characters"].items())
        lines.append(f"dropped text characters  {dropped}")
    if summary["unknown_words"]:
        unknown = summary["unknown_words"]
        listed = ", ".join(f"{word!r}: {count}" for word, count in list(unknown.items())[:LISTED_UNKNOWN_WORDS])
        more = f", and {len(unknown) - LISTED_UNKNOWN_WORDS} more in store.json" if len(unknown) > LISTED_UNKNOWN_WORDS else ""
        lines.append(f"spelled out  {len(unknown)} words not in the pronouncing dictionary: {listed}{more}")
    clipped = summary["clipped"]
    at_ceiling = "" if clipped["ceiling"] is None else f", {clipped['ceiling']:.3%} at the ceiling"
    lines.append(f"clipped      {clipped['floor']:.3%} of training mel bins at the floor{at_ceiling}")
    lines.append(f"features     {json.dumps(summary['feature_config'])}")
    lines.append(f"text         {json.dumps(summary['text_config'])}")
    if "problems" in summary:
        lines.append("verify       " + ("ok: every shard matches the index" if not summary["problems"] else f"{len(summary['problems'])} problems"))
        lines.extend(f"  {problem}" for problem in summary["problems"])
    return "\n".join(lines)
