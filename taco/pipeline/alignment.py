"""Alignment scores: numbers and a one-word verdict that say whether, and how, attention failed.

An alignment is the (decoder steps, tokens) matrix of attention weights. Each decoder step has a
*peak*: the token with the largest weight. The scores:

- focus rate: mean over decoder steps of the peak weight (FastSpeech, Ren et al. 2019). 1 is a sharp
  alignment; a flat one over T tokens scores 1/T.
- coverage: share of tokens that are the peak of at least one step.
- monotonicity: share of steps whose peak does not move back from the previous step's.
- skipped spans: runs of at least SKIP_MIN_TOKENS tokens that are never a peak.
- repeated spans: the peak jumps back by at least REPEAT_MIN_TOKENS tokens (it reads them again),
  or stays on one token for more than max(STALL_MIN_STEPS, STALL_FACTOR x the median stay) steps
  (a stall, which sounds like a held or repeated sound). The last token is exempt from stalls:
  attention rests on it while the final frames play out.
- stopped: the gate fired before the decoder step limit.

The verdict is the first that applies of: `no-stop` (the step limit was hit), `diffuse` (focus rate
below DIFFUSE_FOCUS_RATE), `skips`, `repeats`, `ok`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Below this focus rate the attention has no usable peak: a flat matrix over T tokens scores 1/T (0.05 for
# 20). Clean, monotonic diagonals scored 0.38-0.45 with `tiny` at r=2 (each step's weight spread over ~3
# characters) and 0.75-0.78 at today's r=3, on the bundled and the held-out corpus (benchmarks/alignment.py),
# so the line sits well below them.
DIFFUSE_FOCUS_RATE = 0.25
# A run of never-attended tokens this long is a skipped word, not a letter the model sped past.
SKIP_MIN_TOKENS = 3
# A jump back this far re-reads at least a syllable; one or two tokens back is jitter.
REPEAT_MIN_TOKENS = 3
# Stall: one token held far longer than tokens usually are; at r=1 and 86 frames/s, 25 steps is ~0.3 s.
STALL_MIN_STEPS = 25
STALL_FACTOR = 4.0
VERDICTS = ("no-stop", "diffuse", "skips", "repeats", "ok")


@dataclass(frozen=True)
class AlignmentScores:
    focus_rate: float
    coverage: float
    monotonicity: float
    skipped_spans: list[tuple[int, int]]  # [start, end) token ranges never attended
    repeated_spans: list[tuple[int, int]]  # [start, end) token ranges read again, or a stalled token
    stopped: bool  # the gate fired before the step limit
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def score_alignment(alignment: np.ndarray, stopped: bool = True) -> AlignmentScores:
    """Scores of one (decoder steps, tokens) alignment, cut to the item's real steps and tokens."""
    steps, tokens = alignment.shape
    if steps == 0 or tokens == 0:
        raise ValueError(f"an alignment needs at least one step and one token, got shape {alignment.shape}")
    peaks = alignment.argmax(axis=1)  # (steps,)
    focus_rate = float(alignment.max(axis=1).mean())
    attended = np.zeros(tokens, dtype=bool)
    attended[peaks] = True
    moves = np.diff(peaks)
    monotonicity = float((moves >= 0).mean()) if steps > 1 else 1.0
    skipped = _runs(~attended, SKIP_MIN_TOKENS)
    repeated = [(int(peaks[k + 1]), int(peaks[k]) + 1) for k in np.flatnonzero(moves <= -REPEAT_MIN_TOKENS)]
    repeated += _stalls(peaks, last_token=tokens - 1)
    if not stopped:
        verdict = "no-stop"
    elif focus_rate < DIFFUSE_FOCUS_RATE:
        verdict = "diffuse"
    elif skipped:
        verdict = "skips"
    elif repeated:
        verdict = "repeats"
    else:
        verdict = "ok"
    return AlignmentScores(focus_rate, float(attended.mean()), monotonicity, skipped, sorted(repeated), stopped, verdict)


def _runs(flags: np.ndarray, min_length: int) -> list[tuple[int, int]]:
    """[start, end) ranges where `flags` is True for at least `min_length` in a row."""
    # pad with False on both sides so every run has a rising and a falling edge
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends) if e - s >= min_length]


def _stalls(peaks: np.ndarray, last_token: int) -> list[tuple[int, int]]:
    """Tokens the peak stays on for far longer than the typical stay, as [token, token + 1) spans."""
    change = np.flatnonzero(np.diff(peaks)) + 1
    starts = np.concatenate([[0], change])
    stays = np.diff(np.concatenate([starts, [len(peaks)]]))
    limit = max(STALL_MIN_STEPS, STALL_FACTOR * float(np.median(stays)))
    return [(int(peaks[s]), int(peaks[s]) + 1) for s, stay in zip(starts, stays) if stay > limit and peaks[s] != last_token]


def severity(scores: AlignmentScores) -> tuple[int, float]:
    """Sort key, worst first: verdict order, then lower focus rate."""
    return VERDICTS.index(scores.verdict), scores.focus_rate
