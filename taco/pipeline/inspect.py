"""`taco inspect-alignment`: run a checkpoint on stored utterances or free text, score its attention,
plot it, and rank a whole split worst first: a health report that names the failing utterances.

For a stored utterance the model runs twice: teacher-forced on the target mels (what training sees)
and free-running from the text alone (what synthesis does). Free text runs free only.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from taco.features.store import FeatureStore
from taco.features.text import decode, token_labels
from taco.pipeline.alignment import AlignmentScores, score_alignment, severity
from taco.pipeline.batching import collate
from taco.pipeline.model import decoder_step_lens
from taco.pipeline.plots import inspection_figure, save_figure
from taco.pipeline.synth import SynthConfig, Synthesizer, inference_item
from taco.progress import progress_bar

# Utterances plotted from a `--split` report: the worst few say what is wrong; all would bury them.
DEFAULT_WORST_PLOTTED = 5
REPORT_COLUMNS = ("rank", "id", "verdict", "focus_rate", "coverage", "monotonicity", "skipped", "repeated",
                  "frames", "target_frames", "teacher_forced_verdict", "text")


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
    batch_size: int = 16,
    max_decoder_steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> list[dict]:
    """Scores of each inspected utterance, worst first; also written to OUT_DIR/scores.json with plots.

    Exactly one of `ids` (stored utterances, needs `store_dir`), `split` ("train" or "val", needs
    `store_dir`; `limit` caps how many) and `texts`. A split also writes OUT_DIR/report.tsv and plots
    only the `worst_plotted` worst utterances; ids and texts are all plotted.
    """
    if sum(x is not None for x in (ids, split, texts)) != 1:
        raise InspectError("inspect one of: stored ids, a stored split, or texts")
    synthesizer = Synthesizer(checkpoint_path, device)
    config = SynthConfig(batch_size=batch_size, max_decoder_steps=max_decoder_steps, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if texts is not None:
        rows, figures = _inspect_texts(synthesizer, texts, config, progress)
    else:
        store = _open_store(store_dir, checkpoint_path, synthesizer)
        positions = _select(store, ids, split, limit)
        rows, figures = _inspect_stored(synthesizer, store, positions, config, progress)
    order = sorted(range(len(rows)), key=lambda i: severity(rows[i]["scores"]))
    rows = [rows[i] | {"rank": rank} for rank, i in enumerate(order, start=1)]
    plotted = order[:worst_plotted] if split is not None else order
    for rank, i in enumerate(plotted, start=1):
        name = f"{rank:03d}_{_safe(rows[rank - 1]['id'])}.png"
        save_figure(figures[i](), out_dir / name)
        rows[rank - 1]["plot"] = name
    report = [_as_json(row) for row in rows]
    (out_dir / "scores.json").write_text(json.dumps(report, indent=2) + "\n")
    if split is not None:
        _write_report(out_dir / "report.tsv", report)
    return report


def _open_store(store_dir, checkpoint_path, synthesizer: Synthesizer) -> FeatureStore:
    if store_dir is None:
        raise InspectError("stored utterances need --store")
    store = FeatureStore(store_dir)
    if store.symbols != synthesizer.symbols or store.feature_config != synthesizer.feature_config:
        raise InspectError(
            f"{store.path} was made with other features or symbols than {checkpoint_path} was trained on; "
            "its mels would mean something else to the model"
        )
    return store


def _select(store: FeatureStore, ids, split, limit) -> list[int]:
    if ids is not None:
        position = {id_: i for i, id_ in enumerate(store.ids)}
        missing = [id_ for id_ in ids if id_ not in position]
        if missing:
            raise InspectError(f"{store.path}: no utterance {', '.join(missing)}")
        return [position[id_] for id_ in ids]
    positions = store.split_indices(split).tolist()
    if not positions:
        raise InspectError(f"{store.path}: the {split} split is empty")
    return positions[:limit] if limit else positions


@torch.no_grad()
def _inspect_stored(synthesizer: Synthesizer, store: FeatureStore, positions, config: SynthConfig, progress):
    model, r, device = synthesizer.model, synthesizer.model_config.reduction_factor, synthesizer.device
    torch.manual_seed(config.seed)
    rows, figures = [], []
    batch_starts = range(0, len(positions), config.batch_size)
    for start in progress_bar(batch_starts, desc="inspect", unit="batch", disable=not progress):
        chunk = positions[start : start + config.batch_size]
        items = [store[i] for i in chunk]
        batch = {key: value.to(device) for key, value in collate(items, r).items()}
        forced = model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"])
        free = model.infer(batch["tokens"], batch["token_lens"], config.max_decoder_steps)
        forced_steps = decoder_step_lens(batch["mel_lens"], r).tolist()
        for row, (position, (tokens, target)) in enumerate(zip(chunk, items)):
            n_tokens = len(tokens)
            forced_alignment = forced.alignments[row, : forced_steps[row], :n_tokens].float().cpu().numpy()
            free_mel, free_alignment, gate = inference_item(free, row, n_tokens, r)
            scores = score_alignment(free_alignment, stopped=not bool(free.hit_step_limit[row]))
            version = synthesizer.text_config.symbols_version
            labels = token_labels(tokens, version)
            rows.append({
                "id": store.ids[position],
                "text": decode(tokens, version),
                "scores": scores,
                "teacher_forced": score_alignment(forced_alignment),
                "frames": len(free_mel),
                "target_frames": len(target),
            })
            figures.append(_figure_maker(
                free_alignment, free_mel, gate,
                synthesizer.model_config.gate_threshold, labels, f"{store.ids[position]}: {scores.verdict}",
                forced_alignment, target,
            ))
    return rows, figures


def _inspect_texts(synthesizer: Synthesizer, texts, config: SynthConfig, progress):
    utterances = synthesizer.synthesize(texts, config, progress=progress, vocode=False)
    rows, figures = [], []
    for number, utterance in enumerate(utterances, start=1):
        scores = score_alignment(utterance.alignment, stopped=not utterance.hit_step_limit)
        labels = token_labels(utterance.tokens, synthesizer.text_config.symbols_version)
        rows.append({"id": f"text{number:03d}", "text": utterance.text, "scores": scores, "frames": len(utterance.mel)})
        figures.append(_figure_maker(utterance.alignment, utterance.mel, utterance.gate,
                                     synthesizer.model_config.gate_threshold, labels, f"text {number}: {scores.verdict}"))
    return rows, figures


def _figure_maker(free_alignment, predicted_mel, gate, threshold, labels, title, forced_alignment=None, target_mel=None):
    """A figure is drawn only if it is plotted: a split report plots a few of many utterances."""
    return lambda: inspection_figure(free_alignment, predicted_mel, gate, threshold, labels, title,
                                     forced_alignment, target_mel)


def _as_json(row: dict) -> dict:
    converted = {key: (value.to_dict() if isinstance(value, AlignmentScores) else value) for key, value in row.items()}
    return {"rank": converted.pop("rank"), "id": converted.pop("id"), "verdict": row["scores"].verdict} | converted


def _write_report(path: Path, report: list[dict]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file, delimiter="\t", lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        for row in report:
            writer.writerow(report_line(row))


def report_line(row: dict) -> list:
    """One row of the ranked table, in REPORT_COLUMNS order."""
    scores = row["scores"]
    return [
        row["rank"], row["id"], row["verdict"], f"{scores['focus_rate']:.3f}", f"{scores['coverage']:.3f}",
        f"{scores['monotonicity']:.3f}", _spans(scores["skipped_spans"]), _spans(scores["repeated_spans"]),
        row["frames"], row.get("target_frames", ""), row.get("teacher_forced", {}).get("verdict", ""), row["text"],
    ]


def _spans(spans) -> str:
    return ",".join(f"{start}-{end}" for start, end in spans) or "-"


def _safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)
