"""Preprocess throughput and peak memory: taco against a bare floor and a librosa pipeline.

    python benchmarks/preprocess.py [--corpus DIR | --count N] [--jobs J] [--repeat R]

Measured on one LJSpeech-layout corpus (`--corpus`, or `--count` utterances of espeak-ng speech made
by scripts/make_corpus.py into a cache folder, reused by later runs), with J workers:

- taco preprocess: `taco.features.preprocess.preprocess(corpus, fresh store, jobs=J)` with its
  default backend (J threads), wall time from the call to its return: pool start-up, text front end,
  read, mel, HDF5 write, fsync, index.
- taco preprocess on loky: the same with `backend="loky"`, J worker processes that each import torch.
- taco preprocess with `fft_precision="float64"`: the same as the default run with its STFT in float64
  instead of float32 (mels within 1e-4 of librosa's instead of 5e-4).
- floor: the same files in one process with one torch thread (as each taco worker runs):
  `taco.features.audio.load_audio` (soundfile read, + soxr when a file is not at the feature rate) +
  `taco.features.mel.mel_spectrogram`; no text, no pool, no writing. Its throughput times J is the
  floor: what a perfect J-worker pool reaches.
- J-process floor: the same bare loop in J processes at once, each on every J-th file, timed by the
  slowest. Far below the floor means the machine does not give J cores' worth (SMT, a busy host),
  so "of floor" then measures the machine more than taco.
- librosa pipeline: joblib loky with J workers over chunks of files the size of taco's shards:
  `librosa.load` + `librosa.feature.melspectrogram` (magnitude, same STFT and mel sizes) + the dB
  normalization of Coqui TTS's AudioProcessor; the mels come back to the caller, nothing is written.
- taco and the librosa pipeline also run on the corpus's first quarter. The whole run's best time less
  the quarter's is what the other three quarters cost without the start-up (pool, imports), so the
  ratio of those differences is what "taco / librosa" tends to on ever larger corpora.
- per utterance, in one process with one thread (`--_measure per_utterance`, R rounds taking
  turns, best of each): taco's `process_utterance` (text, read, mel), the floor's read + mel, the
  librosa pipeline's chunk function, and taco's `write_shard` of those utterances' mels into new shard
  files (HDF5, fsync). librosa's time over taco's with the writes is what "taco / librosa" tends to once
  start-up has amortized, before the second worker changes it.
- peak memory of taco preprocess, on the whole corpus and on its first quarter: the process's peak
  RSS, plus J times the largest worker process's where there are any (RUSAGE_SELF, and
  RUSAGE_CHILDREN once the workers exit).

Every run is a fresh Python process (`--_measure`), so each starts its own pool and its peak RSS is
its own. The measurements take turns, R rounds of all of them, so that a busy moment on the machine
does not land on one of them only. Throughput is audio seconds per wall second ("x real time") of
the best of the R runs; peak memory is the largest of them. The files are read once before any
timing, so every run reads them from the page cache.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import soundfile
import torch
from joblib.externals.loky import get_reusable_executor

from taco.features.audio import load_audio
from taco.features.corpus import Entry, read_metadata
from taco.features.mel import FeatureConfig, mel_spectrogram
from taco.features.preprocess import DEFAULT_SHARD_SIZE, preprocess, process_utterance
from taco.features.store import write_shard
from taco.features.text import TextConfig

from report import describe_machine, describe_times, print_table, verdict

MAKE_CORPUS = Path(__file__).resolve().parents[1] / "scripts" / "make_corpus.py"
# make_corpus.py finds about 900 utterances per voice; three voices are enough for 2000.
CORPUS_VOICES = "en-us,en-gb,en-us+f3"
DEFAULT_COUNT = 1000
DEFAULT_REPEAT = 3
# Peak memory is measured on the whole corpus and on its first 1/MEMORY_SMALL_FRACTION.
MEMORY_SMALL_FRACTION = 4
KIB = 1024
MIB = 1024 * 1024

# Targets from the issue.
TARGET_REAL_TIME = 1000.0
TARGET_OF_FLOOR = 0.7
TARGET_VS_LIBROSA = 2.0
# "Does not grow": the whole corpus may take at most this much more peak RSS than its first quarter.
MEMORY_GROWTH_TOLERANCE = 1.10
# Utterances (at most) in the per-utterance measurement.
PER_UTTERANCE_COUNT = 600

# Coqui TTS AudioProcessor defaults (TTS/utils/audio/processor.py, numpy_transforms.py, BaseAudioConfig):
# dB = spec_gain * log10(max(floor, mel)) - ref_level_db; [min_level_db, 0] dB -> [0, 1] ->
# [-max_norm, max_norm] (symmetric_norm), clipped (clip_norm).
COQUI_SPEC_GAIN = 20.0
COQUI_AMP_FLOOR = 1e-8
COQUI_REF_LEVEL_DB = 20.0
COQUI_MIN_LEVEL_DB = -100.0
COQUI_MAX_NORM = 4.0

# the taco preprocess runs: (feature config, joblib backend) by pipeline name
TACO_RUNS = {
    "taco": (FeatureConfig(), "threading"),
    "taco_loky": (FeatureConfig(), "loky"),
    "taco_float64": (FeatureConfig(fft_precision="float64"), "threading"),
}
PIPELINES = (*TACO_RUNS, "floor", "librosa")
POOLED = ("taco_loky", "librosa")  # the pipelines that start worker processes


# ---- corpus -------------------------------------------------------------------------------------


def cached_corpus(count: int) -> Path:
    """The --count corpus, made by scripts/make_corpus.py on first use and reused after."""
    corpus = Path(tempfile.gettempdir()) / f"taco-bench-corpus-{count}"
    if (corpus / "metadata.csv").is_file():
        return corpus
    partial = corpus.with_name(corpus.name + ".partial")  # renamed when whole: a killed run leaves no half corpus
    shutil.rmtree(partial, ignore_errors=True)
    print(f"making a {count}-utterance corpus in {corpus} ...", file=sys.stderr)
    command = [sys.executable, str(MAKE_CORPUS), str(partial), "--count", str(count), "--format", "wav",
               "--engine", "espeak-ng", "--voices", CORPUS_VOICES]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # its progress goes to stderr
    partial.rename(corpus)
    return corpus


def corpus_entries(corpus: Path, limit: int | None = None) -> list[Entry]:
    """The first `limit` (all when None) usable metadata entries of an LJSpeech-layout corpus."""
    entries, _ = read_metadata(corpus / "metadata.csv", corpus / "wavs")
    return entries[:limit]


def write_metadata(entries: list[Entry], path: Path) -> None:
    """A metadata file naming exactly `entries`, so that taco preprocess reads the files the others read."""
    path.write_text("".join(f"{e.id}|{e.text}|{e.text}\n" for e in entries), encoding="utf-8")


def audio_seconds(entries: list[Entry]) -> float:
    return sum(soundfile.info(e.audio_path).duration for e in entries if e.audio_path.is_file())


def warm_page_cache(entries: list[Entry]) -> None:
    for entry in entries:
        if entry.audio_path.is_file():
            entry.audio_path.read_bytes()


# ---- the pipelines, each run inside its own `--_measure` process ----------------------------------


def run_floor(entries: list[Entry], config: FeatureConfig) -> None:
    torch.set_num_threads(1)  # as in each taco worker
    for entry in entries:
        mel_spectrogram(torch.from_numpy(load_audio(entry.audio_path, config.sample_rate)), config)


def run_librosa(entries: list[Entry], config: FeatureConfig, jobs: int) -> None:
    chunks = [[str(e.audio_path) for e in entries[start : start + DEFAULT_SHARD_SIZE]]
              for start in range(0, len(entries), DEFAULT_SHARD_SIZE)]
    # a plain dict, not the FeatureConfig: unpickling that would import taco, and torch, in each worker
    settings = config.to_dict()
    results = joblib.Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(
        joblib.delayed(librosa_chunk)(chunk, settings) for chunk in chunks
    )
    for _ in results:
        pass  # each chunk's mels arrive here and are let go, as a caller that stores them would


def librosa_chunk(paths: list[str], settings: dict) -> list[np.ndarray]:
    """Normalized mels (n_mels, frames) of `paths`, the way Coqui TTS's AudioProcessor makes them.

    `settings` is a FeatureConfig.to_dict().
    """
    import librosa  # here, not at the top, so that taco's peak-RSS runs never load it

    mels = []
    for path in paths:
        wave, _ = librosa.load(path, sr=settings["sample_rate"])
        mel = librosa.feature.melspectrogram(
            y=wave,
            sr=settings["sample_rate"],
            n_fft=settings["n_fft"],
            hop_length=settings["hop_length"],
            win_length=settings["win_length"],
            n_mels=settings["n_mels"],
            fmin=settings["f_min"],
            fmax=settings["f_max"],
            power=1.0,
            pad_mode="reflect",  # as taco and Coqui pad (librosa's default pads with zeros)
        )
        db = COQUI_SPEC_GAIN * np.log10(np.maximum(COQUI_AMP_FLOOR, mel)) - COQUI_REF_LEVEL_DB
        unit = (db - COQUI_MIN_LEVEL_DB) / -COQUI_MIN_LEVEL_DB
        normalized = np.clip(2 * COQUI_MAX_NORM * unit - COQUI_MAX_NORM, -COQUI_MAX_NORM, COQUI_MAX_NORM)
        mels.append(normalized.astype(np.float32))
    return mels


def measure_per_utterance(corpus: Path, repeat: int) -> dict:
    """Milliseconds per utterance of each stage's steady-state work in this one process, best of `repeat` rounds."""
    torch.set_num_threads(1)
    entries = corpus_entries(corpus, PER_UTTERANCE_COUNT)
    config, text = FeatureConfig(), TextConfig()
    settings = config.to_dict()
    paths = [str(entry.audio_path) for entry in entries]
    utterances = []

    def taco() -> None:
        utterances[:] = [process_utterance(entry, config, text, float("inf"))[0] for entry in entries]

    def write(shard_dir: Path) -> None:
        # new files every round, kept until the end: a store's files stay, so its writes land on new pages,
        # never on pages a just-deleted file freed (which this VM writes several times faster)
        for start in range(0, len(utterances), DEFAULT_SHARD_SIZE):
            batch = utterances[start : start + DEFAULT_SHARD_SIZE]
            write_shard(shard_dir / f"{start:06d}.h5", "benchmark", [u.id for u in batch], batch, [], {}, {}, config)

    stages = {"taco": taco, "floor": lambda: run_floor(entries, config),
              "librosa": lambda: librosa_chunk(paths, settings)}
    # imports, caches and first calls, outside the timing
    process_utterance(entries[0], config, text, float("inf"))
    librosa_chunk(paths[:1], settings)
    best = {name: float("inf") for name in [*stages, "write"]}
    with tempfile.TemporaryDirectory(prefix="taco-bench-") as work:
        for number in range(repeat):
            for name, stage in stages.items():
                start = time.perf_counter()
                stage()
                best[name] = min(best[name], time.perf_counter() - start)
            shard_dir = Path(work) / str(number)
            shard_dir.mkdir()
            start = time.perf_counter()
            write(shard_dir)
            best["write"] = min(best["write"], time.perf_counter() - start)
    return {name: 1000 * seconds / len(entries) for name, seconds in best.items()} | {"utterances": len(entries)}


def measure(pipeline: str, corpus: Path, limit: int, jobs: int, part: int | None) -> dict:
    """Run one pipeline once in this process: wall seconds, peak RSS of this process and of its largest worker.

    With `part`, only every `jobs`-th utterance from the `part`-th on (for the J-process floor).
    """
    entries = corpus_entries(corpus, limit)
    if part is not None:
        entries = entries[part::jobs]
    config = FeatureConfig()
    with tempfile.TemporaryDirectory(prefix="taco-bench-") as work:
        metadata = Path(work) / "metadata.csv"
        write_metadata(entries, metadata)
        start = time.perf_counter()
        if pipeline in TACO_RUNS:
            features, backend = TACO_RUNS[pipeline]
            preprocess(corpus, Path(work) / "store", features, metadata=metadata, jobs=jobs, backend=backend,
                       progress=False)
        elif pipeline == "floor":
            run_floor(entries, config)
        else:
            run_librosa(entries, config, jobs)
        seconds = time.perf_counter() - start
    worker_rss = 0
    if pipeline in POOLED:
        # workers count in RUSAGE_CHILDREN only once they have exited and been waited for; elsewhere it
        # holds short helper commands (`uname -p` from an import), whose RSS is not the run's
        get_reusable_executor(max_workers=jobs).shutdown(wait=True)
        worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * KIB
    return {
        "seconds": seconds,
        "main_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB,
        "worker_rss": worker_rss,
    }


# ---- the runs, each in a fresh process ------------------------------------------------------------


def measure_command(pipeline: str, corpus: Path, limit: int, jobs: int, part: int | None = None) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--_measure", pipeline, "--corpus", str(corpus),
               "--_limit", str(limit), "--jobs", str(jobs)]
    return command + ["--_part", str(part)] if part is not None else command


def run_measurement(pipeline: str, corpus: Path, limit: int, jobs: int) -> dict:
    # stdout is the result; stderr passes through, so that a failing run shows why
    result = subprocess.run(measure_command(pipeline, corpus, limit, jobs), check=True, stdout=subprocess.PIPE,
                            text=True)
    return json.loads(result.stdout.splitlines()[-1])


def run_parallel_floor(corpus: Path, limit: int, jobs: int) -> dict:
    """The floor loop in `jobs` processes at once, each on its share of the files; timed by the slowest."""
    processes = [subprocess.Popen(measure_command("floor", corpus, limit, jobs, part), stdout=subprocess.PIPE,
                                  text=True) for part in range(jobs)]
    outputs = [process.communicate()[0] for process in processes]
    if any(process.returncode for process in processes):
        raise RuntimeError("a J-process floor run failed; its error is above")
    return {"seconds": max(json.loads(output.splitlines()[-1])["seconds"] for output in outputs)}


def run_per_utterance(corpus: Path, repeat: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--_measure", "per_utterance", "--corpus", str(corpus),
               "--repeat", str(repeat)]
    # one thread for every library, as in one pool worker: numpy's BLAS (librosa's filterbank product)
    # would otherwise take both cores, where loky gives each librosa worker one
    one_thread = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=os.environ | one_thread)
    return json.loads(result.stdout.splitlines()[-1])


def run_all(corpus: Path, n_utterances: int, jobs: int, repeat: int) -> dict[str, list[dict]]:
    """R rounds of every measurement, taking turns; the runs of each measurement by name."""
    small = n_utterances // MEMORY_SMALL_FRACTION
    runs: dict[str, list[dict]] = {"taco": [], "taco_loky": [], "taco_float64": [], "taco_small": [], "floor": [],
                                   "parallel_floor": [], "librosa": [], "librosa_small": []}
    for number in range(1, repeat + 1):
        print(f"round {number}/{repeat} ...", file=sys.stderr)
        runs["taco"].append(run_measurement("taco", corpus, n_utterances, jobs))
        runs["taco_loky"].append(run_measurement("taco_loky", corpus, n_utterances, jobs))
        runs["taco_float64"].append(run_measurement("taco_float64", corpus, n_utterances, jobs))
        runs["floor"].append(run_measurement("floor", corpus, n_utterances, jobs))
        runs["parallel_floor"].append(run_parallel_floor(corpus, n_utterances, jobs))
        runs["librosa"].append(run_measurement("librosa", corpus, n_utterances, jobs))
        runs["taco_small"].append(run_measurement("taco", corpus, small, jobs))
        runs["librosa_small"].append(run_measurement("librosa", corpus, small, jobs))
    return runs


# ---- report -------------------------------------------------------------------------------------


def peak_rss(runs: list[dict], jobs: int) -> int:
    """Largest main process plus J workers at the largest (if any): an upper bound on the run's total RSS."""
    return max(run["main_rss"] for run in runs) + jobs * max(run["worker_rss"] for run in runs)


def describe_memory(runs: list[dict], jobs: int) -> str:
    main = max(run["main_rss"] for run in runs)
    worker = max(run["worker_rss"] for run in runs)
    if worker == 0:
        return f"{main / MIB:.0f} MiB (one process)"
    return f"{peak_rss(runs, jobs) / MIB:.0f} MiB (main {main / MIB:.0f} + {jobs} x worker {worker / MIB:.0f})"


def print_report(corpus: Path, n_utterances: int, seconds: float, jobs: int, repeat: int,
                 runs: dict[str, list[dict]], per_utterance: dict) -> None:
    times = {name: [run["seconds"] for run in measured] for name, measured in runs.items()}
    taco = seconds / min(times["taco"])
    taco_loky = seconds / min(times["taco_loky"])
    taco_float64 = seconds / min(times["taco_float64"])
    floor = jobs * seconds / min(times["floor"])
    parallel_floor = seconds / min(times["parallel_floor"])
    librosa = seconds / min(times["librosa"])
    small = n_utterances // MEMORY_SMALL_FRACTION
    # start-up (the pool, imports) cancels out: what the ratio tends to on ever larger corpora
    marginal_taco = min(times["taco"]) - min(times["taco_small"])
    marginal_librosa = min(times["librosa"]) - min(times["librosa_small"])
    memory_grows = peak_rss(runs["taco"], jobs) > MEMORY_GROWTH_TOLERANCE * peak_rss(runs["taco_small"], jobs)

    print(describe_machine())
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"librosa {importlib.metadata.version('librosa')}, joblib {joblib.__version__}")
    print(f"corpus: {corpus}, {n_utterances} utterances, {seconds / 3600:.3f} h of audio")
    print(f"J = {jobs} jobs; speeds from the best of {repeat} runs, memory the largest; every run a fresh process")
    print()
    rows = [
        ("taco preprocess (J threads, float32 STFT: the defaults)", f"{taco:.0f}x real time ({describe_times(times['taco'])})",
         f">= {TARGET_REAL_TIME:.0f}x", verdict(taco >= TARGET_REAL_TIME)),
        ("taco preprocess --backend loky (J processes)",
         f"{taco_loky:.0f}x real time ({describe_times(times['taco_loky'])})", "", ""),
        ("floor: J x one-process read + mel", f"{floor:.0f}x real time (1 process: {describe_times(times['floor'])})",
         "", ""),
        ("taco / floor", f"{taco / floor:.2f} of floor", f">= {TARGET_OF_FLOOR}",
         verdict(taco / floor >= TARGET_OF_FLOOR)),
        ("J-process floor (J loops at once)", f"{parallel_floor:.0f}x real time "
         f"({describe_times(times['parallel_floor'])})", "", ""),
        ("taco / J-process floor", f"{taco / parallel_floor:.2f}", "", ""),
        ("librosa pipeline (loky, J workers)", f"{librosa:.0f}x real time ({describe_times(times['librosa'])})",
         "", ""),
        ("taco / librosa", f"{taco / librosa:.2f}x", f">= {TARGET_VS_LIBROSA:.0f}x",
         verdict(taco / librosa >= TARGET_VS_LIBROSA)),
        ("taco preprocess --fft-precision float64 (J threads)",
         f"{taco_float64:.0f}x real time ({describe_times(times['taco_float64'])})", "", ""),
        ("taco float64 / librosa", f"{taco_float64 / librosa:.2f}x", "", ""),
        ("taco default / taco float64", f"{taco / taco_float64:.2f}x", "", ""),
        (f"taco / librosa on utterances {small + 1}-{n_utterances} (whole run - first quarter's run)",
         f"{marginal_librosa / marginal_taco:.2f}x ({marginal_librosa:.2f} s / {marginal_taco:.2f} s)", "", ""),
        (f"per utterance, 1 process ({per_utterance['utterances']} utterances): taco text + read + mel",
         f"{per_utterance['taco']:.3f} ms", "", ""),
        ("per utterance: floor read + mel", f"{per_utterance['floor']:.3f} ms", "", ""),
        ("per utterance: librosa load + mel", f"{per_utterance['librosa']:.3f} ms", "", ""),
        ("per utterance: taco shard write (HDF5 into new files, fsync)", f"{per_utterance['write']:.3f} ms", "", ""),
        ("per utterance: librosa / (taco + write), the steady state of one worker",
         f"{per_utterance['librosa'] / (per_utterance['taco'] + per_utterance['write']):.2f}x", "", ""),
        (f"taco peak RSS, {small} utterances", describe_memory(runs["taco_small"], jobs), "", ""),
        (f"taco peak RSS, {n_utterances} utterances", describe_memory(runs["taco"], jobs), "not growing",
         verdict(not memory_grows)),
    ]
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", type=Path, help="an LJSpeech-layout corpus (metadata.csv, wavs/)")
    source.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help="make (or reuse) an espeak-ng corpus of this many utterances")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="workers J")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs of each measurement")
    parser.add_argument("--_measure", choices=[*PIPELINES, "per_utterance"], help=argparse.SUPPRESS)
    parser.add_argument("--_limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_part", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.jobs < 1 or args.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")

    if args._measure == "per_utterance":
        print(json.dumps(measure_per_utterance(args.corpus, args.repeat)))
        return
    if args._measure:
        print(json.dumps(measure(args._measure, args.corpus, args._limit, args.jobs, args._part)))
        return

    corpus = args.corpus or cached_corpus(args.count)
    entries = corpus_entries(corpus)
    if len(entries) < MEMORY_SMALL_FRACTION * args.jobs:
        parser.error(f"{corpus}: needs at least {MEMORY_SMALL_FRACTION * args.jobs} usable utterances")
    warm_page_cache(entries)
    runs = run_all(corpus, len(entries), args.jobs, args.repeat)
    per_utterance = run_per_utterance(corpus, args.repeat)
    print_report(corpus, len(entries), audio_seconds(entries), args.jobs, args.repeat, runs, per_utterance)


if __name__ == "__main__":
    main()
