"""Alignment scores on hand-made alignments: each failure mode gets its own verdict."""

import numpy as np
import pytest

from taco.pipeline.alignment import score_alignment, severity


def path_alignment(peaks: list[int], tokens: int, sharpness: float = 0.9) -> np.ndarray:
    """(steps, tokens) with `sharpness` on each step's peak and the rest spread evenly."""
    alignment = np.full((len(peaks), tokens), (1 - sharpness) / (tokens - 1))
    alignment[np.arange(len(peaks)), peaks] = sharpness
    return alignment


def diagonal(tokens: int = 20, steps_per_token: int = 3) -> list[int]:
    return [t for t in range(tokens) for _ in range(steps_per_token)]


def test_a_clean_diagonal_is_ok():
    scores = score_alignment(path_alignment(diagonal(), 20))
    assert scores.verdict == "ok"
    assert scores.focus_rate == pytest.approx(0.9)
    assert scores.coverage == 1.0 and scores.monotonicity == 1.0
    assert scores.skipped_spans == [] and scores.repeated_spans == []


def test_a_jump_over_tokens_is_skips_and_names_the_span():
    peaks = [t for t in diagonal() if not 8 <= t < 13]
    scores = score_alignment(path_alignment(peaks, 20))
    assert scores.verdict == "skips"
    assert scores.skipped_spans == [(8, 13)]
    assert scores.coverage == pytest.approx(15 / 20)


def test_a_stall_on_one_token_is_repeats():
    peaks = diagonal()[:30] + [10] * 40 + diagonal()[30:]
    scores = score_alignment(path_alignment(peaks, 20))
    assert scores.verdict == "repeats"
    assert scores.repeated_spans == [(10, 11)]


def test_reading_a_span_again_is_repeats_and_names_the_span():
    peaks = diagonal()[:45] + diagonal()[15:]  # back from token 14 to token 5
    scores = score_alignment(path_alignment(peaks, 20))
    assert scores.verdict == "repeats"
    assert scores.repeated_spans == [(5, 15)]
    assert scores.monotonicity < 1.0


def test_a_flat_matrix_is_diffuse():
    scores = score_alignment(np.full((60, 20), 1 / 20))
    assert scores.verdict == "diffuse"
    assert scores.focus_rate == pytest.approx(0.05)


def test_an_item_cut_at_the_step_limit_is_no_stop_whatever_its_attention():
    assert score_alignment(path_alignment(diagonal(), 20), stopped=False).verdict == "no-stop"


def test_resting_on_the_last_token_while_the_audio_ends_is_not_a_stall():
    peaks = diagonal() + [19] * 50
    assert score_alignment(path_alignment(peaks, 20)).verdict == "ok"


def test_one_token_of_backward_jitter_is_not_a_repeat():
    peaks = diagonal()
    peaks[31] = peaks[30] - 1
    assert score_alignment(path_alignment(peaks, 20)).verdict == "ok"


def test_severity_ranks_worst_verdict_first_then_lowest_focus():
    ok_sharp = score_alignment(path_alignment(diagonal(), 20, 0.95))
    ok_soft = score_alignment(path_alignment(diagonal(), 20, 0.6))
    no_stop = score_alignment(path_alignment(diagonal(), 20), stopped=False)
    diffuse = score_alignment(np.full((60, 20), 1 / 20))
    ranked = sorted([ok_sharp, diffuse, ok_soft, no_stop], key=severity)
    assert ranked == [no_stop, diffuse, ok_soft, ok_sharp]
