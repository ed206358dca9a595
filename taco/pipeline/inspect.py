"""`taco inspect-alignment`: run a checkpoint on stored utterances or free text, score its attention,
plot it, and rank a whole split worst first: a health report that names the failing utterances.

For a stored utterance the model runs twice: teacher-forced on the target mels (what training sees)
and free-running from the text alone (what synthesis does). Free text runs free only. With `asr` each
free-running line is also vocoded as `taco synth` does, written beside the report and transcribed by
the recognizer (taco.pipeline.asr), and OUT_DIR/report.html lets a reader listen, worst WER first.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch

from taco.features.store import FeatureStore, write_tsv_atomically
from taco.features.text import decode, token_labels
from taco.files import replaced_when_written
from taco.pipeline.alignment import AlignmentScores, score_alignment, severity
from taco.pipeline.asr import Recognizer, reference_words, word_error_rate
from taco.pipeline.batching import collate, to_device
from taco.pipeline.html_report import write_html_report
from taco.pipeline.intelligibility import vocode_mel
from taco.pipeline.plots import inspection_figure, save_figure
from taco.pipeline.reduction import steps_for
from taco.pipeline.stored import SelectionError, open_store, select_positions, store_corpus
from taco.pipeline.synth import SynthConfig, Synthesizer, inference_item, write_wav
from taco.progress import progress_bar
from taco.signals import Interrupted, until_interrupted

# Utterances plotted from a `--split` report: the worst few say what is wrong; all would bury them.
DEFAULT_WORST_PLOTTED = 5
REPORT_COLUMNS = ("rank", "id", "verdict", "focus_rate", "coverage", "monotonicity", "skipped", "repeated",
                  "frames", "target_frames", "teacher_forced_verdict", "text")
# Added by `asr`: the free-running line's word error rate and what the recognizer heard.
ASR_COLUMNS = ("wer", "recognized")


class InspectError(Exception):
    """The inspection cannot run as asked; str() is a one-line explanation."""


def inspect(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    store_dir: str | os.PathLike | None = None,
    ids: list[str] | None = None,
    split: str | None = None,
    limit: int | None = None,
    texts: list[str] | None = None,
    worst_plotted: int = DEFAULT_WORST_PLOTTED,
    batch_size: int = SynthConfig().batch_size,
    max_decoder_steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    asr: bool = False,
    corpus_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> list[dict]:
    """Scores of each inspected utterance, worst first; also written to OUT_DIR/scores.json with plots.

    Exactly one of `ids` (stored utterances, needs `store_dir`), `split` ("train" or "val", needs
    `store_dir`; `limit` caps how many) and `texts`. A split also writes OUT_DIR/report.tsv and plots
    only the `worst_plotted` worst utterances; ids and texts are all plotted.

    `asr` adds to each row the free-running line's wav, what the recognizer heard and its word error rate
    against the corpus text (`corpus_dir`, else the corpus store.json records; when neither is there,
    against the stored tokens' text), plots every utterance and writes OUT_DIR/report.html.

    A stop (Ctrl-C, or SIGINT/SIGTERM under taco.signals.interrupted_by_signals) ends the inspection where
    it is: the report of the utterances scored so far is written at once (without the transcriptions and
    plots not yet made), and Interrupted raised saying so.
    """
    if sum(x is not None for x in (ids, split, texts)) != 1:
        raise InspectError("inspect one of: stored ids, a stored split, or texts")
    # first: a missing pocketsphinx fails before minutes of synthesis
    recognizer = Recognizer() if asr else None
    synthesizer = Synthesizer(checkpoint_path, device)
    config = SynthConfig(batch_size=batch_size, max_decoder_steps=max_decoder_steps, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = {}
    if texts is not None:
        total = len(texts)
        done, stop = until_interrupted(_inspect_texts(synthesizer, texts, config, progress))
    else:
        store = open_store(store_dir, checkpoint_path, synthesizer)
        positions = select_positions(store, ids, split, limit)
        if asr:
            corpus = _corpus_if_there(store, corpus_dir)
        total = len(positions)
        done, stop = until_interrupted(_inspect_stored(synthesizer, store, positions, config, progress))
    # worst first; equals in their given order (texts finish in batches of similar length, in no fixed order)
    done = sorted(done, key=lambda item: (severity(item.row["scores"]), item.position))
    rows = [item.row | {"rank": rank} for rank, item in enumerate(done, start=1)]
    transcribed = []
    if asr and stop is None:
        transcribed, stop = until_interrupted(_recognize(rows, [item.mel for item in done], corpus, synthesizer,
                                                         config, recognizer, out_dir, progress))
    drawn = []
    if stop is None:  # after a stop, the report is written at once, without its plots
        plotted = len(rows) if split is None or asr else worst_plotted
        drawn, stop = until_interrupted(_plot(rows[:plotted], [item.figure for item in done], out_dir))
    report = [_as_json(row) for row in rows]
    with replaced_when_written(out_dir / "scores.json") as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")
    if split is not None:
        columns = report_columns(report)
        write_tsv_atomically(out_dir / "report.tsv", columns, [report_line(row, columns) for row in report])
    if transcribed:
        write_html_report(out_dir / "report.html", report)
    if stop is not None:
        heard = f"{len(transcribed)} transcribed, " if asr else ""
        raise Interrupted(stop.signum, f"the report in {out_dir} covers the {len(report)} of {total} utterances "
                                       f"inspected before it ({heard}{len(drawn)} plotted)")
    return report


class Inspected(NamedTuple):
    """One inspected utterance: its place among those asked for, its report row, the maker of its plot
    (drawn only if plotted) and its free-running mel."""

    position: int
    row: dict
    figure: Callable
    mel: np.ndarray


def _corpus_if_there(store: FeatureStore, corpus_dir) -> dict:
    """The store's corpus lines, or none when the corpus store.json records has gone (a named one must be there)."""
    try:
        return store_corpus(store, corpus_dir)
    except SelectionError:
        if corpus_dir is not None:
            raise
        return {}


def _recognize(rows: list[dict], mels, corpus: dict, synthesizer: Synthesizer, config: SynthConfig,
               recognizer: Recognizer, out_dir: Path, progress: bool) -> Iterator[dict]:
    """Vocode each row's free-running mel, write it to OUT_DIR/NAME.wav (and copy the recording, when there
    is one, to OUT_DIR/recordings/), add what the recognizer heard and its word error rate to the row, and
    yield the row, in order."""
    sample_rate = synthesizer.feature_config.sample_rate
    for row, mel in progress_bar(list(zip(rows, mels)), desc="recognize", unit="line", disable=not progress):
        entry = corpus.get(row["id"])
        reference = reference_words(entry.text if entry else row["text"], synthesizer.text_config.cleaners)
        wave = vocode_mel(synthesizer, mel, config)
        heard = recognizer.transcribe(wave, sample_rate)
        added = {"audio": f"{row['rank']:03d}_{_safe(row['id'])}.wav", "reference": " ".join(reference),
                 "recognized": " ".join(heard), "wer": word_error_rate([reference], [heard])["wer"]}
        write_wav(out_dir / added["audio"], wave, sample_rate)
        if entry and entry.audio_path.is_file():
            added["recording"] = f"recordings/{entry.audio_path.name}"
            (out_dir / "recordings").mkdir(exist_ok=True)
            with replaced_when_written(out_dir / added["recording"]) as temporary:
                shutil.copyfile(entry.audio_path, temporary)
        row |= added  # all at once: a row stopped halfway has none of it
        yield row


def _plot(rows: list[dict], figures: list[Callable], out_dir: Path) -> Iterator[dict]:
    """Draw each row's figure to OUT_DIR/RANK_ID.png, name it in the row, and yield the row."""
    for row, figure in zip(rows, figures):
        name = f"{row['rank']:03d}_{_safe(row['id'])}.png"
        save_figure(figure(), out_dir / name)
        row["plot"] = name
        yield row


@torch.no_grad()  # torch wraps each step of a generator
def _inspect_stored(synthesizer: Synthesizer, store: FeatureStore, positions, config: SynthConfig,
                    progress) -> Iterator[Inspected]:
    model, r, device = synthesizer.model, synthesizer.model_config.reduction_factor, synthesizer.device
    torch.manual_seed(config.seed)
    batch_starts = range(0, len(positions), config.batch_size)
    for start in progress_bar(batch_starts, desc="inspect", unit="batch", disable=not progress):
        chunk = positions[start : start + config.batch_size]
        items = [store[i] for i in chunk]
        batch = to_device(collate(items, r), device)
        forced = model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"])
        free = model.infer(batch["tokens"], batch["token_lens"], config.max_decoder_steps)
        forced_steps = steps_for(batch["mel_lens"], r).tolist()
        for row, (position, (tokens, target)) in enumerate(zip(chunk, items)):
            n_tokens = len(tokens)
            forced_alignment = forced.alignments[row, : forced_steps[row], :n_tokens].float().cpu().numpy()
            free_mel, free_alignment, gate = inference_item(free, row, n_tokens, r)
            scores = score_alignment(free_alignment, stopped=not bool(free.hit_step_limit[row]))
            version = synthesizer.text_config.symbols_version
            labels = token_labels(tokens, version)
            report_row = {
                "id": store.ids[position],
                "text": decode(tokens, version),
                "scores": scores,
                "teacher_forced": score_alignment(forced_alignment),
                "frames": len(free_mel),
                "target_frames": len(target),
            }
            figure = _figure_maker(
                free_alignment, free_mel, gate,
                synthesizer.model_config.gate_threshold, labels, f"{store.ids[position]}: {scores.verdict}",
                forced_alignment, target,
            )
            yield Inspected(start + row, report_row, figure, free_mel)


def _inspect_texts(synthesizer: Synthesizer, texts, config: SynthConfig, progress) -> Iterator[Inspected]:
    for i, utterance in synthesizer.synthesize_each(texts, config, progress=progress, vocode=False):
        number = i + 1
        scores = score_alignment(utterance.alignment, stopped=not utterance.hit_step_limit)
        labels = token_labels(utterance.tokens, synthesizer.text_config.symbols_version)
        row = {"id": f"text{number:03d}", "text": utterance.text, "scores": scores, "frames": len(utterance.mel)}
        figure = _figure_maker(utterance.alignment, utterance.mel, utterance.gate,
                               synthesizer.model_config.gate_threshold, labels, f"text {number}: {scores.verdict}")
        yield Inspected(i, row, figure, utterance.mel)


def _figure_maker(free_alignment, predicted_mel, gate, threshold, labels, title, forced_alignment=None, target_mel=None):
    """A figure is drawn only if it is plotted: a split report plots a few of many utterances."""
    return lambda: inspection_figure(free_alignment, predicted_mel, gate, threshold, labels, title,
                                     forced_alignment, target_mel)


def _as_json(row: dict) -> dict:
    converted = {key: (value.to_dict() if isinstance(value, AlignmentScores) else value) for key, value in row.items()}
    return {"rank": converted.pop("rank"), "id": converted.pop("id"), "verdict": row["scores"].verdict} | converted


def report_columns(report: list[dict]) -> tuple[str, ...]:
    """The ranked table's header: REPORT_COLUMNS, then ASR_COLUMNS when lines were transcribed."""
    return REPORT_COLUMNS + ASR_COLUMNS if any("wer" in row for row in report) else REPORT_COLUMNS


def report_line(row: dict, columns: tuple[str, ...]) -> list:
    """One row of the ranked table, under `columns` (report_columns); ASR's cells are empty for a line a stop
    left untranscribed."""
    scores = row["scores"]
    line = [
        row["rank"], row["id"], row["verdict"], f"{scores['focus_rate']:.3f}", f"{scores['coverage']:.3f}",
        f"{scores['monotonicity']:.3f}", _spans(scores["skipped_spans"]), _spans(scores["repeated_spans"]),
        row["frames"], row.get("target_frames", ""), row.get("teacher_forced", {}).get("verdict", ""), row["text"],
    ]
    if columns == REPORT_COLUMNS:
        return line
    return line + ([f"{row['wer']:.3f}", row["recognized"]] if "wer" in row else ["", ""])


def _spans(spans) -> str:
    return ",".join(f"{start}-{end}" for start, end in spans) or "-"


def _safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)
