"""The reduction-factor convention: decoder step k holds frames k*r .. k*r + r - 1."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from taco.pipeline.reduction import (frames_for, last_frame_of_each_step, spread_over_frames, steps_for, stop_step,
                                     whole_steps)


def test_seven_frames_at_r_3_take_three_steps_the_last_one_partly_filled():
    assert steps_for(7, 3) == 3
    assert whole_steps(7, 3) == frames_for(3, 3) == 9
    assert stop_step(7, 3) == 2  # frames 6, 7, 8 (0-based): the 7th frame is frame 6
    mels = torch.arange(9.0).reshape(1, 9, 1)  # frame i holds the value i
    assert last_frame_of_each_step(mels, 3).flatten().tolist() == [2.0, 5.0, 8.0]
    per_step = torch.tensor([[True, False, True]])  # (B=1, T_dec=3)
    assert spread_over_frames(per_step, 3).tolist() == [[True] * 3 + [False] * 3 + [True] * 3]


@given(frames=st.integers(1, 10_000), r=st.integers(1, 8))
def test_the_step_holding_the_last_frame_is_the_last_step(frames, r):
    assert stop_step(frames, r) == steps_for(frames, r) - 1
    assert frames <= whole_steps(frames, r) < frames + r
    assert whole_steps(frames, r) % r == 0


def test_tensors_of_lengths_map_as_ints_do():
    frames = torch.tensor([1, 3, 4, 9])
    assert steps_for(frames, 3).tolist() == [steps_for(int(n), 3) for n in frames] == [1, 1, 2, 3]
    assert stop_step(frames, 3).tolist() == [0, 0, 1, 2]
