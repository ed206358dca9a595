"""The reduction factor r: the decoder emits r mel frames per step (Tacotron 1; r = 1 in the paper's Tacotron2).

Decoder step k holds frames k*r .. k*r + r - 1. Every mapping between frames and decoder steps is here:
collate pads a batch to whole steps and sets the gate targets, teacher forcing feeds each step the last
frame of the step before (scheduled sampling chooses its source per step), the losses mask by steps,
and inference, synthesis and inspection cut by them.
Each function takes Python ints or integer tensors alike.
"""

from __future__ import annotations

from torch import Tensor


def steps_for(frames, r: int):
    """Decoder steps that hold `frames` frames: ceil(frames / r); a partly filled last step counts."""
    return (frames + r - 1) // r


def frames_for(steps, r: int):
    """Frames that `steps` decoder steps emit."""
    return steps * r


def whole_steps(frames, r: int):
    """`frames` rounded up to whole decoder steps: the padded length of a batch."""
    return frames_for(steps_for(frames, r), r)


def stop_step(frames, r: int):
    """The decoder step that holds the last of `frames` frames: the first whose gate target is 1."""
    return (frames - 1) // r


def last_frame_of_each_step(mels: Tensor, r: int) -> Tensor:
    """(B, T_dec * r, n_mels) -> (B, T_dec, n_mels): the frame that the next step is fed."""
    return mels[:, r - 1 :: r]


def spread_over_frames(per_step: Tensor, r: int) -> Tensor:
    """(B, T_dec, ...) -> (B, T_dec * r, ...): each step's value repeated for each of its r frames."""
    return per_step.repeat_interleave(r, dim=1)
