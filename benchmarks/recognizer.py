"""How well pocketsphinx understands each flite voice, and how long it takes: which voice to bundle.

    python benchmarks/recognizer.py [--count 30] [--voices kal16 slt rms awb]

Speaks the first `--count` sentences of the bundled corpus's metadata.csv with each flite voice and with
espeak-ng (en-us), reads each wav as preprocessing would (mono, resampled with soxr to the default
22050 Hz), and transcribes it with taco's recognizer (taco.pipeline.asr), which resamples to 16 kHz.
Prints a markdown table: the corpus-level word error rate of each voice, and of the bundled recordings
(flite rms) of the same sentences, and the recognition time per utterance. Needs flite, espeak-ng and
pocketsphinx (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from taco.features.audio import load_audio
from taco.features.corpus import read_metadata
from taco.features.mel import FeatureConfig
from taco.pipeline.asr import Recognizer, reference_words, word_error_rate

from report import describe_machine, load_average

BUNDLED_CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "ljspeech_flite"
VOICES = ("kal16", "slt", "rms", "awb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30, help="sentences per voice")
    parser.add_argument("--voices", nargs="+", default=list(VOICES), help="flite voices")
    args = parser.parse_args()
    for engine in ("flite", "espeak-ng"):
        if shutil.which(engine) is None:
            raise SystemExit(f"{engine} is not installed (apt-get install {engine})")

    entries, _ = read_metadata(BUNDLED_CORPUS / "metadata.csv", BUNDLED_CORPUS / "wavs")
    entries = entries[: args.count]
    references = [reference_words(entry.text) for entry in entries]
    sample_rate = FeatureConfig().sample_rate
    recognizer = Recognizer()
    print(f"{describe_machine()}; {len(entries)} sentences of {BUNDLED_CORPUS.name}/metadata.csv per voice, "
          f"read at {sample_rate} Hz as preprocessing would")
    oov = recognizer.out_of_vocabulary(references)
    print(f"reference words the recognizer's dictionary lacks ({len(oov)}): {', '.join(oov) or '-'}\n")
    print("| voice | WER | edits / words | recognition s per utterance | audio s per utterance |")
    print("| --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for voice in args.voices:
            paths = [Path(folder) / f"{voice}_{number}.wav" for number in range(len(entries))]
            for entry, path in zip(entries, paths):
                subprocess.run(["flite", "-voice", voice, "-t", entry.text, "-o", str(path)], check=True)
            print_row(f"flite {voice}", paths, references, recognizer, sample_rate)
        paths = [Path(folder) / f"espeak_{number}.wav" for number in range(len(entries))]
        for entry, path in zip(entries, paths):
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), entry.text], check=True)
        print_row("espeak-ng en-us", paths, references, recognizer, sample_rate)
    print_row("the bundled recordings (flite rms)", [entry.audio_path for entry in entries], references,
              recognizer, sample_rate)
    print(f"\nload average {load_average()}")


def print_row(name: str, paths: list[Path], references: list[list[str]], recognizer: Recognizer,
              sample_rate: int) -> None:
    """Transcribe each file, read at `sample_rate`, and print its table row."""
    hypotheses, seconds, audio_seconds = [], 0.0, 0.0
    for path in paths:
        wave = load_audio(path, sample_rate)
        audio_seconds += len(wave) / sample_rate
        start = time.perf_counter()
        hypotheses.append(recognizer.transcribe(wave, sample_rate))
        seconds += time.perf_counter() - start
    result = word_error_rate(references, hypotheses)
    print(f"| {name} | {result['wer']:.3f} | {result['edits']} / {result['words']} | "
          f"{seconds / len(paths):.2f} | {audio_seconds / len(paths):.1f} |", flush=True)


if __name__ == "__main__":
    main()
