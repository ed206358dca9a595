"""Make a small real-speech corpus in LJSpeech layout with flite or espeak-ng.

No real speech corpus can be downloaded where taco is developed and tested, so this
script makes one from a real engine speaking real English prose.

Text sources (`--texts`):
- `licenses`: the license texts that Debian ships in /usr/share/common-licenses (GPL-3,
  GPL-2, LGPL-2.1, Apache-2.0, MPL-2.0, Artistic, GFDL-1.3, CC0-1.0; see LICENSE_FILES).
  Their authors (the FSF, the Apache Software Foundation, Mozilla, the Perl Foundation,
  Creative Commons) allow anyone to copy them verbatim.
- `python-docs`: the Python language reference as every CPython ships it for `help()`
  (the module pydoc_data.topics; PSF license), a second vocabulary for a corpus that a
  model was not tuned on.
Each utterance is a sentence of one of them, or a run of its clauses cut at a comma,
semicolon or colon, quoted word for word;
only whitespace is collapsed, list markers such as "1.1." or "(a)" and unpaired brackets
or quotes are dropped, and a period replaces what a cut or a list item leaves at the end
(", " "; or" "; and").

Cleaning keeps a sentence only if it uses plain characters (letters, digits, spaces and
.,;:!?'"()-), so that no URL, "<year>", "and/or" or "*" reaches the corpus; is mostly
letters; is not shouted in capitals; and is a sentence rather than a heading. Numbers and
abbreviations ("version 3", "e.g.") stay as they are.

Audio (`--engine`), one call per utterance, run through subprocess without a shell:
- `flite -voice VOICE -t TEXT -o FILE` (the default): CMU's diphone and cluster-unit
  voices kal16, rms, slt and awb speak at 16 kHz. An offline recognizer (pocketsphinx)
  understands them (18-26% word error rate on these texts, against 86% for espeak-ng's
  en-us), which is what taco's intelligibility benchmark needs.
- `espeak-ng -v VOICE -s RATE -w FILE -- TEXT`: 22050 Hz.
Each engine's native rate is kept (taco resamples with soxr when it reads the corpus).
Nothing is trimmed: the engines' silences are short and `taco preprocess --trim-db`
handles silence. An utterance is kept only if its synthesized duration lies within
[--min-seconds, --max-seconds].

Output (LJSpeech layout):

    OUT_DIR/metadata.csv   ID|raw text|normalized text   (UTF-8, no header)
    OUT_DIR/wavs/ID.flac   (or .wav) at the engine's own rate (flite 16 kHz, espeak-ng 22050 Hz), mono, PCM_16
    OUT_DIR/README.md      source, voice, rate, the command that made it, statistics

The normalized column repeats the raw text: taco's text front end expands numbers and
abbreviations itself, so the corpus does not do it twice.

IDs are FLTvvv-nnnn (flite) or ESPvvv-nnnn (espeak-ng): vvv numbers the voice (1 for the
first of --voices), nnnn counts that voice's utterances. With one voice (the default, since
Tacotron2 is single-speaker) the corpus is one speaker. The license texts give about 900
utterances per voice within 1.5 to 6 seconds; a larger corpus (for benchmarks, which need
no single speaker) names more voices, e.g. `--engine espeak-ng --voices en-us,en-gb,en-us+f3`
for 2000: once the texts run out for one voice, the same texts are spoken by the next voice.

Deterministic: the same arguments, the same engine version and the same source texts
give the same corpus (the texts are deduplicated, then shuffled with --seed).

Usage (the bundled corpus, and the held-out corpus of the intelligibility benchmark):

    python scripts/make_corpus.py corpus/ljspeech_flite --count 300 --voices rms
    python scripts/make_corpus.py /tmp/heldout --count 300 --voices slt --texts python-docs
"""

import argparse
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import soundfile as sf

LICENSE_DIR = Path("/usr/share/common-licenses")
# Distinct prose only: GFDL-1.2, MPL-1.1, LGPL-2 and LGPL-3 mostly repeat these.
LICENSE_FILES = (
    "GPL-3",
    "GPL-2",
    "LGPL-2.1",
    "Apache-2.0",
    "MPL-2.0",
    "Artistic",
    "GFDL-1.3",
    "CC0-1.0",
)

# espeak-ng's words per minute. LJSpeech's reader speaks 225,715 words in 23:55:17 (its
# README), about 157 per minute; espeak-ng's default of 175 is faster than that.
ESPEAK_RATE = 150


class Engine(NamedTuple):
    """A command-line speech synthesizer: how to call it and what it writes."""

    id_prefix: str
    default_voice: str  # one fixed speaker: Tacotron2 learns a single voice
    sample_rate: int  # its native output rate, checked on every file
    description: str  # for the corpus README
    command: Callable[[str, str, Path], list[str]]  # (text, voice, wav path) -> argv


ENGINES = {
    # rms: the flite voice pocketsphinx understands best on the license texts (18% word
    # error rate on 20 sentences, against 21% kal16, 25% awb, 26% slt)
    "flite": Engine(
        "FLT", "rms", 16000, "flite, at its default speaking rate",
        lambda text, voice, path: ["flite", "-voice", voice, "-t", text, "-o", str(path)],
    ),
    "espeak-ng": Engine(
        "ESP", "en-us", 22050, f"espeak-ng, speaking rate {ESPEAK_RATE} words per minute",
        lambda text, voice, path: ["espeak-ng", "-v", voice, "-s", str(ESPEAK_RATE), "-w", str(path), "--", text],
    ),
}
# espeak-ng's speaking rate at ESPEAK_RATE, measured on en-us and en-gb for sentences of the licenses
# (13.7 to 15.4 characters per second); used only to decide where to cut.
CHARS_PER_SECOND = 14.5
# Pack clauses up to this share of --max-seconds, so that estimate errors rarely
# push a phrase past the limit (the measured duration decides in the end).
PACK_FRACTION = 0.9
# Utterances synthesized per round per worker: enough to keep every core busy,
# few enough that little is synthesized past --count.
ROUND_PER_WORKER = 8

# Characters a kept sentence may use: what an LJSpeech-style text front end expects.
ALLOWED_CHARS = set(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"()-"
)
# Below this share of letters and spaces a line is numbers or symbols, not prose.
MIN_LETTER_FRACTION = 0.85
# Above this share of capitals among letters a sentence is a heading or a shouted
# disclaimer ("THERE IS NO WARRANTY"), not prose.
MAX_UPPER_FRACTION = 0.5
# A piece with no final punctuation is a list item ("...; or") only if it ends in a
# lowercase word and has at least this many words; otherwise it is a heading.
MIN_WORDS_UNTERMINATED = 5
# Words ending in a period that do not end a sentence; the only two these texts use
# ("Free Software Foundation, Inc.", "Mozilla Public License, v. 2.0").
ABBREVIATIONS = {"inc.", "v."}

# A sentence ends at . ! ? before a capital, digit, quote or bracket, which a list
# marker such as "b." or "(ii)" may precede.
SENTENCE_END = re.compile(r"[.!?][\"')]*\s+(?=(?:\(?[0-9a-z]{1,4}[.)]\s+)?[A-Z0-9\"(])")
CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
# What a cut or a list item ("...; or") leaves dangling at the end of a phrase.
DANGLING_END = re.compile(r"(?:[,;:]?\s+(?:and|or))?[\s,;:]*$")
LIST_MARKER = re.compile(r"^(?:\(?[0-9A-Za-z]{1,4}\)|\d+(?:\.\d+)*\.?)\s+")


def read_paragraphs(path: Path) -> list[str]:
    """Paragraphs of a text file, each on one line with whitespace collapsed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    return [p for p in paragraphs if p]


def split_sentences(paragraph: str) -> list[str]:
    """Split at SENTENCE_END, except after ABBREVIATIONS."""
    sentences, start = [], 0
    for match in SENTENCE_END.finditer(paragraph):
        words = paragraph[start : match.start() + 1].split()
        if words and words[-1].lower() in ABBREVIATIONS:
            continue
        sentences.append(paragraph[start : match.end()].strip())
        start = match.end()
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def strip_list_marker(sentence: str) -> str:
    """Drop leading markers such as "1.1.", "3." or "(a)"."""
    while (match := LIST_MARKER.match(sentence)) and match.end() < len(sentence):
        sentence = sentence[match.end() :]
    return sentence


def is_prose(sentence: str) -> bool:
    """True for a sentence of plain characters, mostly letters, not capitals, not a heading.

    A heading is title case ("Disclaimer of Warranty.") or lacks final punctuation.
    """
    if not sentence or not set(sentence) <= ALLOWED_CHARS:
        return False
    letters = [c for c in sentence if c.isalpha()]
    if (len(letters) + sentence.count(" ")) / len(sentence) < MIN_LETTER_FRACTION:
        return False
    if sum(c.isupper() for c in letters) / max(len(letters), 1) > MAX_UPPER_FRACTION:
        return False
    if all(w[0].isupper() for w in sentence.split() if len(w.strip(".,;:!?'\"()")) > 3):
        return False
    if sentence.rstrip("\"')").endswith((".", "!", "?")):
        return True
    words = sentence.split()
    return len(words) >= MIN_WORDS_UNTERMINATED and words[-1].islower()


def split_phrases(sentence: str, max_chars: int) -> list[str]:
    """Cut a long sentence at , ; : into runs of clauses of at most max_chars (when possible)."""
    if len(sentence) <= max_chars:
        return [sentence]
    phrases, current = [], ""
    for clause in CLAUSE_END.split(sentence):
        joined = f"{current} {clause}" if current else clause
        if current and len(joined) > max_chars:
            phrases.append(current)
            current = clause
        else:
            current = joined
    phrases.append(current)
    return phrases


def finish_phrase(phrase: str) -> str:
    """End with a period where a cut or a list item left , ; : "and", "or" or nothing.

    Unpaired brackets and quotes, which a cut can leave, are dropped.
    """
    if phrase.count("(") != phrase.count(")"):
        phrase = phrase.replace("(", "").replace(")", "")
    if phrase.count('"') % 2:
        phrase = phrase.replace('"', "")
    phrase = DANGLING_END.sub("", " ".join(phrase.split()))
    if not phrase.rstrip("\"')").endswith((".", "!", "?")):
        phrase += "."
    return phrase


def license_paragraphs() -> list[str]:
    """The paragraphs of LICENSE_FILES, in file order."""
    paragraphs = []
    for name in LICENSE_FILES:
        path = LICENSE_DIR / name
        if not path.is_file():
            sys.exit(f"error: {path} is missing; this script needs Debian's license texts")
        paragraphs += read_paragraphs(path)
    return paragraphs


def python_docs_paragraphs() -> list[str]:
    """The paragraphs of the Python language reference that `help()` shows, topic by topic."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        blocks = (" ".join(block.split()) for block in re.split(r"\n\s*\n", topics[name]))
        paragraphs += [block for block in blocks if block]
    return paragraphs


TEXT_SOURCES = {"licenses": license_paragraphs, "python-docs": python_docs_paragraphs}


def collect_texts(source: str, max_seconds: float) -> list[str]:
    """Distinct utterance texts of a TEXT_SOURCES entry, in source order."""
    max_chars = int(max_seconds * PACK_FRACTION * CHARS_PER_SECOND)
    texts, seen = [], set()
    for paragraph in TEXT_SOURCES[source]():
        for sentence in split_sentences(paragraph):
            sentence = strip_list_marker(sentence)
            if not is_prose(sentence):
                continue
            for phrase in split_phrases(sentence, max_chars):
                text = finish_phrase(phrase)
                key = text.casefold()
                if key not in seen:
                    seen.add(key)
                    texts.append(text)
    return texts


def synthesize(engine: Engine, text: str, voice: str, path: Path) -> np.ndarray:
    """Speak text into path; return its int16 samples (and delete the file)."""
    subprocess.run(engine.command(text, voice, path), check=True, capture_output=True)
    audio, sample_rate = sf.read(path, dtype="int16")
    path.unlink()
    if sample_rate != engine.sample_rate or audio.ndim != 1:
        raise RuntimeError(f"{engine.description} wrote {sample_rate} Hz, shape {audio.shape}")
    return audio


def engine_version(engine_name: str) -> str:
    """The version number the engine prints, e.g. "1.51" or "2.2"."""
    # flite prints its version and exits 1, so the exit status says nothing here
    result = subprocess.run([engine_name, "--version"], capture_output=True, text=True)
    return re.search(r"\d+(?:\.\d+)+", result.stdout).group()


def make_corpus(
    out_dir: Path,
    engine: Engine,
    texts_source: str,
    count: int,
    min_seconds: float,
    max_seconds: float,
    audio_format: str,
    seed: int,
    voices: list[str],
    jobs: int,
) -> list[tuple[str, str, float]]:
    """Write wavs/ and metadata.csv; return (id, text, seconds) for each utterance."""
    texts = collect_texts(texts_source, max_seconds)
    random.Random(seed).shuffle(texts)
    print(f"{len(texts)} distinct texts in {texts_source}", file=sys.stderr)
    candidates = [(v, text) for v in range(len(voices)) for text in texts]
    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True)
    kept: list[tuple[str, str, float]] = []
    per_voice = [0] * len(voices)
    round_size = jobs * ROUND_PER_WORKER
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(jobs) as pool:
        for start in range(0, len(candidates), round_size):
            batch = candidates[start : start + round_size]
            paths = [Path(tmp) / f"{start + i}.wav" for i in range(len(batch))]
            texts_in_batch = [text for _, text in batch]
            voices_in_batch = [voices[v] for v, _ in batch]
            audios = pool.map(synthesize, [engine] * len(batch), texts_in_batch, voices_in_batch, paths)
            for (v, text), audio in zip(batch, audios):
                seconds = len(audio) / engine.sample_rate
                if not min_seconds <= seconds <= max_seconds or len(kept) == count:
                    continue
                per_voice[v] += 1
                utterance_id = f"{engine.id_prefix}{v + 1:03d}-{per_voice[v]:04d}"
                path = wav_dir / f"{utterance_id}.{audio_format}"
                sf.write(path, audio, engine.sample_rate, subtype="PCM_16")
                kept.append((utterance_id, text, seconds))
            print(f"kept {len(kept)}/{count} of {start + len(batch)} synthesized", file=sys.stderr)
            if len(kept) == count:
                break
    if len(kept) < count:
        sys.exit(
            f"error: only {len(kept)} of {count} utterances fit in "
            f"[{min_seconds}, {max_seconds}] s; add voices with --voices"
        )
    with open(out_dir / "metadata.csv", "w", encoding="utf-8", newline="\n") as f:
        for utterance_id, text, _ in kept:
            f.write(f"{utterance_id}|{text}|{text}\n")
    return kept


SOURCE_NOTES = {
    "licenses": f"""Sentences and clauses quoted verbatim from the license texts in
`/usr/share/common-licenses` on Debian: {", ".join(LICENSE_FILES)}.
Their authors (the Free Software Foundation, the Apache Software Foundation, Mozilla,
the Perl Foundation, Creative Commons) permit anyone to copy them verbatim.""",
    "python-docs": """Sentences and clauses quoted verbatim from the Python language reference as CPython
ships it for `help()` (the module `pydoc_data.topics`), under the Python Software
Foundation License.""",
}


def write_readme(
    out_dir: Path,
    command: str,
    engine_name: str,
    texts_source: str,
    voices: list[str],
    kept: list[tuple[str, str, float]],
) -> None:
    """Describe the corpus next to metadata.csv: source, license, engine, command, statistics."""
    engine = ENGINES[engine_name]
    seconds = np.array([s for _, _, s in kept])
    voice_lines = "\n".join(
        f"  - `{engine.id_prefix}{i + 1:03d}`: {engine_name} voice `{voice}`" for i, voice in enumerate(voices)
    )
    text = f"""# {engine_name} corpus in LJSpeech layout

Made by `scripts/make_corpus.py` (its docstring explains every step):

    {command}

- Engine: {engine.description} (version {engine_version(engine_name)}); no trimming,
  no resampling.
- Audio: `wavs/ID.*`, {engine.sample_rate} Hz, mono, 16-bit PCM.
- Text: `metadata.csv`, `ID|raw text|normalized text`, UTF-8, no header. The normalized
  column repeats the raw text; taco's text front end normalizes numbers and abbreviations.
- Voices (the ID prefix names the voice):
{voice_lines}

## Source of the text

{SOURCE_NOTES[texts_source]} Only whitespace was collapsed, list markers and unpaired
brackets or quotes dropped, and a period put where a long sentence was cut at a comma,
semicolon or colon, or where a list item ended in "; or" or "; and".

## Statistics

- Utterances: {len(kept)}
- Total audio: {seconds.sum() / 60:.1f} minutes
- Duration: min {seconds.min():.2f} s, mean {seconds.mean():.2f} s, max {seconds.max():.2f} s
"""
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="corpus folder to create")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="flite", help="speech synthesizer")
    parser.add_argument("--texts", choices=sorted(TEXT_SOURCES), default="licenses", help="source of the sentences")
    parser.add_argument("--count", type=int, default=200, help="number of utterances")
    parser.add_argument("--min-seconds", type=float, default=1.5, help="shortest utterance kept")
    parser.add_argument("--max-seconds", type=float, default=6.0, help="longest utterance kept")
    parser.add_argument("--format", choices=["flac", "wav"], default="flac", help="audio format")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentence order")
    parser.add_argument(
        "--voices",
        default=None,
        help="comma-separated voices of the engine, used in turn once the texts run out "
        f"(default: {', '.join(f'{name} {engine.default_voice}' for name, engine in ENGINES.items())})",
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel synthesizer processes"
    )
    args = parser.parse_args()
    engine = ENGINES[args.engine]
    voices = [v.strip() for v in (args.voices or engine.default_voice).split(",") if v.strip()]
    if not voices or args.count < 1 or not 0 < args.min_seconds < args.max_seconds:
        parser.error("need a voice, --count >= 1 and 0 < --min-seconds < --max-seconds")
    if (args.out_dir / "metadata.csv").exists() or (args.out_dir / "wavs").exists():
        parser.error(f"{args.out_dir} already holds a corpus; remove it or choose another folder")
    command = shlex.join(
        [
            "python",
            "scripts/make_corpus.py",
            str(args.out_dir),
            f"--engine={args.engine}",
            f"--texts={args.texts}",
            f"--count={args.count}",
            f"--min-seconds={args.min_seconds}",
            f"--max-seconds={args.max_seconds}",
            f"--format={args.format}",
            f"--seed={args.seed}",
            f"--voices={','.join(voices)}",
        ]
    )
    kept = make_corpus(
        args.out_dir,
        engine,
        args.texts,
        args.count,
        args.min_seconds,
        args.max_seconds,
        args.format,
        args.seed,
        voices,
        args.jobs,
    )
    write_readme(args.out_dir, command, args.engine, args.texts, voices, kept)
    print(f"wrote {len(kept)} utterances to {args.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
