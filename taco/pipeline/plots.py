"""Figures of what the model does: attention alignments and mels. matplotlib with the Agg backend only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training and inspection run on machines without a display

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# Above this many tokens, character labels on the axis overlap and say nothing.
MAX_LABELLED_TOKENS = 120


def alignment_figure(alignment: np.ndarray, text: str | None = None, title: str = "") -> Figure:
    """(T_dec, T_text) attention weights -> a figure with decoder steps across and tokens up.

    With `text` (one character per token), the token axis is labelled with the characters.
    """
    steps, tokens = alignment.shape
    figure, axis = plt.subplots(figsize=(max(6.0, min(steps / 40, 16.0)), max(4.0, min(tokens / 12, 12.0))))
    # (T_dec, T_text) -> (T_text, T_dec): decoder time runs left to right, text bottom to top
    image = axis.imshow(alignment.T, aspect="auto", origin="lower", interpolation="none", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis)
    axis.set_xlabel("decoder step")
    axis.set_ylabel("token")
    if text is not None and len(text) == tokens and tokens <= MAX_LABELLED_TOKENS:
        axis.set_yticks(range(tokens))
        axis.set_yticklabels([char if char != " " else "␣" for char in text], fontsize=6)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def mel_figure(mels: list[np.ndarray], titles: list[str]) -> Figure:
    """Stacked (frames, n_mels) mels, one panel each, sharing the frame axis."""
    figure, axes = plt.subplots(len(mels), 1, figsize=(10, 2.5 * len(mels)), sharex=True, squeeze=False)
    for axis, mel, title in zip(axes[:, 0], mels, titles):
        # (frames, n_mels) -> (n_mels, frames): low bands at the bottom
        axis.imshow(mel.T, aspect="auto", origin="lower", interpolation="none")
        axis.set_title(title)
        axis.set_ylabel("mel band")
    axes[-1, 0].set_xlabel("frame")
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
