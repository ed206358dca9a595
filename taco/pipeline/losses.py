"""Tacotron2 training losses, each term masked so that padding never counts.

- mel and postnet: the error between predicted and target mels over the real frames: squared ("mse",
  the Tacotron2 paper's), absolute ("l1", Tacotron 1's and Coqui's) or both ("l1+mse", ESPnet's default);
- gate: binary cross-entropy of the stop logit per decoder step, with a positive weight because the
  stop step is one step in hundreds (ESPnet's bce_pos_weight);
- guided attention (Tachibana et al. 2017, "Efficiently trainable text-to-speech ..."): penalizes
  attention far from the diagonal, which makes alignment appear in far fewer steps. Its value is the
  mean penalty over the valid (decoder step, token) cells of the batch, as in the paper and ESPnet's
  GuidedAttentionLoss, so that a weight means the same as theirs whatever the text length;
- ctc, when the model has a TextRecognizer: CTC loss of the text read back from the decoder's mels over
  the real frames, per token (F.ctc_loss's "mean"), blank PAD_ID; 0 without a recognizer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from taco.features.text import PAD_ID
from taco.pipeline.model import mask_from_lens
from taco.pipeline.reduction import steps_for


class LossTerms(NamedTuple):
    total: torch.Tensor
    mel: torch.Tensor
    postnet: torch.Tensor
    gate: torch.Tensor
    guided_attention: torch.Tensor
    ctc: torch.Tensor


MEL_LOSSES = ("mse", "l1", "l1+mse")


def masked_mel_error(prediction: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor,
                     kind: str = "mse") -> torch.Tensor:
    """Mean error per mel bin over the real frames of (B, T, n_mels) tensors; `kind` is one of MEL_LOSSES,
    "l1+mse" the sum of the two means."""
    mask = frame_mask[:, :, None].to(prediction.dtype)  # (B, T) -> (B, T, 1)
    difference = (prediction - target) * mask
    total = difference.new_zeros(())
    if kind in ("l1", "l1+mse"):
        total = total + difference.abs().sum()
    if kind in ("mse", "l1+mse"):
        total = total + difference.pow(2).sum()
    return total / (mask.sum() * prediction.shape[-1])


def guided_attention_weights(step_lens: torch.Tensor, token_lens: torch.Tensor, max_steps: int, max_tokens: int,
                             sigma: float) -> torch.Tensor:
    """(B, max_steps, max_tokens) penalty 1 - exp(-(n/N - t/T)^2 / (2 sigma^2)), zero outside each item."""
    steps = torch.arange(max_steps, device=step_lens.device, dtype=torch.float32)[None, :, None]
    tokens = torch.arange(max_tokens, device=step_lens.device, dtype=torch.float32)[None, None, :]
    # (B, 1, 1) lengths broadcast against (1, N, 1) steps and (1, 1, T) tokens -> (B, N, T)
    n_over_N = steps / step_lens[:, None, None].float()
    t_over_T = tokens / token_lens[:, None, None].float()
    weights = 1.0 - torch.exp(-((n_over_N - t_over_T) ** 2) / (2 * sigma**2))
    inside = mask_from_lens(step_lens, max_steps)[:, :, None] & mask_from_lens(token_lens, max_tokens)[:, None, :]
    return weights * inside


def guided_attention_loss(alignments: torch.Tensor, step_lens: torch.Tensor, token_lens: torch.Tensor,
                          sigma: float) -> torch.Tensor:
    """Mean penalty of (B, T_dec, T_text) attention over the batch's valid cells, the (step, token) pairs
    inside each item's step_lens x token_lens rectangle (Tachibana et al.'s mean; ESPnet's reduction)."""
    _, max_steps, max_tokens = alignments.shape
    penalty = guided_attention_weights(step_lens, token_lens, max_steps, max_tokens, sigma)
    valid_cells = (step_lens * token_lens).sum()
    return (alignments * penalty).sum() / valid_cells


def tacotron2_loss(
    output,
    batch: dict[str, torch.Tensor],
    reduction_factor: int,
    gate_pos_weight: float,
    guided_attention_weight: float,
    guided_attention_sigma: float,
    ctc_weight: float = 0.0,
    mel_loss: str = "mse",
) -> LossTerms:
    """All loss terms of one batch. `output` is a Tacotron2Output; `batch` comes from `collate`.

    The guided attention term enters `total` multiplied by `guided_attention_weight` (the caller decays
    it over training); it is reported unweighted so that logs stay comparable as the weight changes.
    The ctc term enters it multiplied by `ctc_weight`, and is reported unweighted too. `mel_loss` (one of
    MEL_LOSSES) is the error of the mel and postnet terms.
    """
    targets, mel_lens, token_lens = batch["mels"], batch["mel_lens"], batch["token_lens"]
    frame_mask = mask_from_lens(mel_lens, targets.shape[1])
    mel = masked_mel_error(output.mels, targets, frame_mask, mel_loss)
    postnet = masked_mel_error(output.mels_postnet, targets, frame_mask, mel_loss)

    step_lens = steps_for(mel_lens, reduction_factor)
    step_mask = mask_from_lens(step_lens, output.gate_logits.shape[1])
    gate_losses = F.binary_cross_entropy_with_logits(
        output.gate_logits,
        batch["gate_targets"],
        pos_weight=output.gate_logits.new_full((), gate_pos_weight),  # a fill: a copy from the host would wait
        reduction="none",
    )
    gate = (gate_losses * step_mask).sum() / step_mask.sum()

    guided = guided_attention_loss(output.alignments, step_lens, token_lens, guided_attention_sigma)

    if output.recognized is None:
        ctc = mel.new_zeros(())
    else:
        # (B, T_mel, n_symbols) -> (T_mel, B, n_symbols), as ctc_loss takes it; zero_infinity: a text
        # with more tokens than frames has no CTC path, and must not make the loss infinite
        ctc = F.ctc_loss(output.recognized.transpose(0, 1), batch["tokens"], mel_lens, token_lens, blank=PAD_ID,
                         zero_infinity=True)

    total = mel + postnet + gate + guided_attention_weight * guided + ctc_weight * ctc
    return LossTerms(total, mel, postnet, gate, guided, ctc)
