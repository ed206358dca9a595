"""Figures of what the model does: attention alignments and mels. matplotlib with the Agg backend only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training and inspection run on machines without a display

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from taco.files import replaced_when_written  # noqa: E402

# Above this many tokens, token labels on the axis overlap and say nothing.
MAX_LABELLED_TOKENS = 120


def alignment_figure(alignment: np.ndarray, labels: list[str] | None = None, title: str = "") -> Figure:
    """(T_dec, T_text) attention weights -> a figure with decoder steps across and tokens up.

    With `labels` (one per token: a character or a phone, see `text.token_labels`), the token axis is labelled.
    """
    steps, tokens = alignment.shape
    figure, axis = plt.subplots(figsize=(max(6.0, min(steps / 40, 16.0)), max(4.0, min(tokens / 12, 12.0))))
    image, _ = _draw_alignment(axis, alignment, labels)
    figure.colorbar(image, ax=axis)
    axis.set_ylabel("token")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def mel_figure(mels: list[np.ndarray], titles: list[str]) -> Figure:
    """Stacked (frames, n_mels) mels, one panel each, sharing the frame axis."""
    figure, axes = plt.subplots(len(mels), 1, figsize=(10, 2.5 * len(mels)), sharex=True, squeeze=False)
    for axis, mel, title in zip(axes[:, 0], mels, titles):
        _draw_mel(axis, mel)
        axis.set_title(title)
    axes[-1, 0].set_xlabel("frame")
    figure.tight_layout()
    return figure


def _draw_alignment(axis, alignment: np.ndarray, labels: list[str] | None):
    """Draw (T_dec, T_text) weights on `axis`, the token axis labelled with `labels` when there is one per
    token and few enough to read. Returns the image and whether the ticks were labelled."""
    tokens = alignment.shape[1]
    # (T_dec, T_text) -> (T_text, T_dec): decoder time runs left to right, text bottom to top
    image = axis.imshow(alignment.T, aspect="auto", origin="lower", interpolation="none", vmin=0.0, vmax=1.0)
    axis.set_xlabel("decoder step")
    labelled = labels is not None and len(labels) == tokens and tokens <= MAX_LABELLED_TOKENS
    if labelled:
        axis.set_yticks(range(tokens))
        axis.set_yticklabels([label if label != " " else "␣" for label in labels], fontsize=6)
    return image, labelled


def _draw_mel(axis, mel: np.ndarray) -> None:
    # (frames, n_mels) -> (n_mels, frames): low bands at the bottom
    axis.imshow(mel.T, aspect="auto", origin="lower", interpolation="none")
    axis.set_ylabel("mel band")


def save_figure(figure: Figure, path: Path) -> None:
    """Write `figure` in the format path's extension names, complete or not at all, and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replaced_when_written(path) as temporary:
            figure.savefig(temporary, dpi=100, format=path.suffix[1:])
    finally:
        plt.close(figure)


def inspection_figure(
    free_alignment: np.ndarray,
    predicted_mel: np.ndarray,
    gate: np.ndarray,
    gate_threshold: float,
    labels: list[str],
    title: str,
    forced_alignment: np.ndarray | None = None,
    target_mel: np.ndarray | None = None,
) -> Figure:
    """One utterance on one page: alignments (teacher-forced beside free-running when there is a target),
    target and predicted mels, and the gate's stop probability per decoder step with its threshold."""
    alignments = [("free running", free_alignment)]
    if forced_alignment is not None:
        alignments.insert(0, ("teacher forced", forced_alignment))
    mels = [("predicted (free running)", predicted_mel)]
    if target_mel is not None:
        mels.insert(0, ("target", target_mel))
    figure = plt.figure(figsize=(14, 5 + 2.2 * len(mels) + 2), layout="constrained")
    rows = figure.subfigures(3, 1, height_ratios=[5, 2.2 * len(mels), 2])
    axes = rows[0].subplots(1, len(alignments), squeeze=False)[0]
    for axis, (name, alignment) in zip(axes, alignments):
        _, labelled = _draw_alignment(axis, alignment, labels)
        axis.set_title(f"{name} alignment")
        if not labelled:
            axis.set_ylabel("token")
    for axis, (name, mel) in zip(rows[1].subplots(len(mels), 1, sharex=True, squeeze=False)[:, 0], mels):
        _draw_mel(axis, mel)
        axis.set_title(f"{name} mel, {len(mel)} frames")
    axis = rows[2].subplots()
    axis.plot(gate, label="stop probability")
    axis.axhline(gate_threshold, color="red", linestyle="--", label=f"threshold {gate_threshold:g}")
    axis.set_ylim(-0.05, 1.05)
    axis.set_xlabel("decoder step")
    axis.legend(loc="upper left")
    figure.suptitle(title)
    return figure
