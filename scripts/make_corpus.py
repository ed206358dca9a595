"""Make a small real-speech corpus in LJSpeech layout with espeak-ng.

No real speech corpus can be downloaded where taco is developed and tested, so this
script makes one from a real engine speaking real English prose (design.md, "Test data").

Text source: the license texts that Debian ships in /usr/share/common-licenses (GPL-3,
GPL-2, LGPL-2.1, Apache-2.0, MPL-2.0, Artistic, GFDL-1.3, CC0-1.0; see LICENSE_FILES).
Their authors (the FSF, the Apache Software Foundation, Mozilla, the Perl Foundation,
Creative Commons) allow anyone to copy them verbatim. Each utterance is a sentence of one
of them, or a run of its clauses cut at a comma, semicolon or colon, quoted word for word;
only whitespace is collapsed, list markers such as "1.1." or "(a)" and unpaired brackets
or quotes are dropped, and a period replaces what a cut or a list item leaves at the end
(", " "; or" "; and").

Cleaning keeps a sentence only if it uses plain characters (letters, digits, spaces and
.,;:!?'"()-), so that no URL, "<year>", "and/or" or "*" reaches the corpus; is mostly
letters; is not shouted in capitals; and is a sentence rather than a heading. Numbers and
abbreviations ("version 3", "e.g.") stay as they are.

Audio: `espeak-ng -v VOICE -s RATE -w FILE -- TEXT`, one call per utterance, run through
subprocess without a shell. espeak-ng speaks at 22050 Hz mono 16-bit natively, which is
the rate taco's features default to, so nothing is resampled. Nothing is trimmed either:
espeak's silences are short and `taco preprocess --trim-db` handles silence. An utterance
is kept only if its synthesized duration lies within [--min-seconds, --max-seconds].

Output (LJSpeech layout):

    OUT_DIR/metadata.csv   ID|raw text|normalized text   (UTF-8, no header)
    OUT_DIR/wavs/ID.flac   (or .wav) 22050 Hz, mono, PCM_16
    OUT_DIR/README.md      source, voice, rate, the command that made it, statistics

The normalized column repeats the raw text: taco's text front end expands numbers and
abbreviations itself, so the corpus does not do it twice.

IDs are ESPvvv-nnnn: vvv numbers the voice (1 for the first of --voices), nnnn counts
that voice's utterances. With one voice (the default, since Tacotron2 is single-speaker)
the corpus is one speaker. The license texts give about 900 utterances per voice within
1.5 to 6 seconds; a larger corpus (for benchmarks, which need no single speaker) names
more voices, e.g. `--voices en-us,en-gb,en-us+f3` for 2000: once the texts run out for
one voice, the same texts are spoken by the next voice.

Deterministic: the same arguments, the same espeak-ng version and the same license files
give the same corpus (the texts are deduplicated, then shuffled with --seed).

Usage (the bundled corpus):

    python scripts/make_corpus.py corpus/ljspeech_espeak --count 200
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

ESPEAK = "espeak-ng"
# One fixed speaker: Tacotron2 learns a single voice.
VOICE = "en-us"
# Words per minute. LJSpeech's reader speaks 225,715 words in 23:55:17 (its README),
# about 157 per minute; espeak-ng's default of 175 is faster than that.
RATE = 150
# espeak-ng's native output rate, and the rate taco's features default to.
SAMPLE_RATE = 22050
# Speaking rate at RATE, measured on en-us and en-gb for sentences of these texts
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


def collect_texts(max_seconds: float) -> list[str]:
    """Distinct utterance texts from LICENSE_FILES, in file order."""
    max_chars = int(max_seconds * PACK_FRACTION * CHARS_PER_SECOND)
    texts, seen = [], set()
    for name in LICENSE_FILES:
        path = LICENSE_DIR / name
        if not path.is_file():
            sys.exit(f"error: {path} is missing; this script needs Debian's license texts")
        for paragraph in read_paragraphs(path):
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


def synthesize(text: str, voice: str, path: Path) -> np.ndarray:
    """Speak text with espeak-ng into path; return its int16 samples (and delete the file)."""
    command = [ESPEAK, "-v", voice, "-s", str(RATE), "-w", str(path), "--", text]
    subprocess.run(command, check=True, capture_output=True)
    audio, sample_rate = sf.read(path, dtype="int16")
    path.unlink()
    if sample_rate != SAMPLE_RATE or audio.ndim != 1:
        raise RuntimeError(f"espeak-ng wrote {sample_rate} Hz, shape {audio.shape}")
    return audio


def espeak_version() -> str:
    """The version number that `espeak-ng --version` prints, e.g. "1.51"."""
    result = subprocess.run([ESPEAK, "--version"], check=True, capture_output=True, text=True)
    return re.search(r"\d+(?:\.\d+)+", result.stdout).group()


def make_corpus(
    out_dir: Path,
    count: int,
    min_seconds: float,
    max_seconds: float,
    audio_format: str,
    seed: int,
    voices: list[str],
    jobs: int,
) -> list[tuple[str, str, float]]:
    """Write wavs/ and metadata.csv; return (id, text, seconds) for each utterance."""
    texts = collect_texts(max_seconds)
    random.Random(seed).shuffle(texts)
    print(f"{len(texts)} distinct texts in {len(LICENSE_FILES)} license files", file=sys.stderr)
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
            audios = pool.map(synthesize, texts_in_batch, voices_in_batch, paths)
            for (v, text), audio in zip(batch, audios):
                seconds = len(audio) / SAMPLE_RATE
                if not min_seconds <= seconds <= max_seconds or len(kept) == count:
                    continue
                per_voice[v] += 1
                utterance_id = f"ESP{v + 1:03d}-{per_voice[v]:04d}"
                path = wav_dir / f"{utterance_id}.{audio_format}"
                sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
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


def write_readme(
    out_dir: Path, command: str, voices: list[str], kept: list[tuple[str, str, float]]
) -> None:
    """Describe the corpus next to metadata.csv: source, license, engine, command, statistics."""
    seconds = np.array([s for _, _, s in kept])
    voice_lines = "\n".join(
        f"  - `ESP{i + 1:03d}`: espeak-ng voice `{voice}`" for i, voice in enumerate(voices)
    )
    text = f"""# espeak-ng corpus in LJSpeech layout

Made by `scripts/make_corpus.py` (its docstring explains every step):

    {command}

- Engine: espeak-ng {espeak_version()}, speaking rate {RATE} words per minute; no trimming,
  no resampling.
- Audio: `wavs/ID.*`, {SAMPLE_RATE} Hz, mono, 16-bit PCM.
- Text: `metadata.csv`, `ID|raw text|normalized text`, UTF-8, no header. The normalized
  column repeats the raw text; taco's text front end normalizes numbers and abbreviations.
- Voices (the ID prefix names the voice):
{voice_lines}

## Source of the text

Sentences and clauses quoted verbatim from the license texts in
`/usr/share/common-licenses` on Debian: {", ".join(LICENSE_FILES)}.
Their authors (the Free Software Foundation, the Apache Software Foundation, Mozilla,
the Perl Foundation, Creative Commons) permit anyone to copy them verbatim. Only
whitespace was collapsed, list markers and unpaired brackets or quotes dropped, and a
period put where a long sentence was cut at a comma, semicolon or colon, or where a list
item ended in "; or" or "; and".

## Statistics

- Utterances: {len(kept)}
- Total audio: {seconds.sum() / 60:.1f} minutes
- Duration: min {seconds.min():.2f} s, mean {seconds.mean():.2f} s, max {seconds.max():.2f} s
"""
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="corpus folder to create")
    parser.add_argument("--count", type=int, default=200, help="number of utterances")
    parser.add_argument("--min-seconds", type=float, default=1.5, help="shortest utterance kept")
    parser.add_argument("--max-seconds", type=float, default=6.0, help="longest utterance kept")
    parser.add_argument("--format", choices=["flac", "wav"], default="flac", help="audio format")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentence order")
    parser.add_argument(
        "--voices",
        default=VOICE,
        help="comma-separated espeak-ng voices, used in turn once the texts run out",
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel espeak-ng processes"
    )
    args = parser.parse_args()
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    if not voices or args.count < 1 or not 0 < args.min_seconds < args.max_seconds:
        parser.error("need a voice, --count >= 1 and 0 < --min-seconds < --max-seconds")
    if (args.out_dir / "metadata.csv").exists() or (args.out_dir / "wavs").exists():
        parser.error(f"{args.out_dir} already holds a corpus; remove it or choose another folder")
    command = shlex.join(
        [
            "python",
            "scripts/make_corpus.py",
            str(args.out_dir),
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
        args.count,
        args.min_seconds,
        args.max_seconds,
        args.format,
        args.seed,
        voices,
        args.jobs,
    )
    write_readme(args.out_dir, command, voices, kept)
    print(f"wrote {len(kept)} utterances to {args.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
