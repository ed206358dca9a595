"""How to train: TrainConfig, and the schedules it defines (learning rate, guided-attention weight,
scheduled sampling).

Its own module because the training loop (train.py) and the run folder it writes (run_folder.py) both
read it, and neither should import the other for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from taco.config import JsonConfig
from taco.pipeline.griffin_lim import DEFAULT_ITERATIONS
from taco.pipeline.losses import MEL_LOSSES

AMP_MODES = ("bf16", "fp16", "none")


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """How to train. Defaults: NVIDIA/tacotron2 hparams and the seed, unless a comment says otherwise."""

    batch_frames: int | None = 40_000  # padded mel frames per batch: ~64 LJSpeech utterances (NVIDIA batch 64)
    batch_size: int | None = None  # a fixed number of utterances instead of batch_frames
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-5  # cosine decay ends here at max_steps
    warmup_steps: int = 1000  # linear warm-up: Adam's early steps are large while its moments settle
    max_steps: int = 100_000
    weight_decay: float = 1e-6
    grad_clip: float = 1.0  # max global grad norm
    # the error of the mel and postnet terms, one of MEL_LOSSES: the paper's "mse", "l1" (Tacotron 1, Coqui)
    # or "l1+mse" (ESPnet)
    mel_loss: str = "mse"
    gate_pos_weight: float = 5.0  # one stop step per utterance; ESPnet's bce_pos_weight
    guided_attention_weight: float = 1.0  # ESPnet's guided_attn_loss_lambda
    guided_attention_sigma: float = 0.4  # ESPnet's guided_attn_loss_sigma (Tachibana et al. used 0.2)
    guided_attention_half_life: int = 10_000  # steps for the weight to halve; 0 keeps it constant
    # fraction of decoder steps that read the model's own prediction of their previous frame instead of the
    # target (parallel scheduled sampling, Duckworth et al. 2019), reached linearly over scheduled_sampling_ramp
    # steps; 0: pure teacher forcing, as in the paper. Costs one extra forward pass without autograd per step.
    scheduled_sampling: float = 0.0
    scheduled_sampling_ramp: int = 1000
    # of the text recognizer's CTC loss, for a model with one (recognizer_channels). 0.1: with 1.0, 14 of 15
    # free-running lines of `tiny` never stopped at 750 steps (its gradient crowds out the gate's); with 0.1
    # one did not (docs/benchmarks.md, session 9)
    ctc_weight: float = 0.1
    amp: str = "bf16"  # mixed precision on CUDA: bf16, fp16 (with a grad scaler) or none; CPU runs in fp32
    seed: int = 1234
    num_workers: int = 2  # DataLoader worker processes per rank
    checkpoint_every: int = 1000  # steps; also when alignment plots and audio samples are written
    keep_last: int = 3  # step checkpoints kept besides best.pt
    log_every: int = 50  # steps between TensorBoard scalar writes
    max_nonfinite_steps: int = 20  # steps skipped in a row (NaN/inf mels, loss or gradient) before the run stops
    griffin_lim_iterations: int = DEFAULT_ITERATIONS  # of the audio samples written at each checkpoint

    def __post_init__(self):
        if (self.batch_frames is None) == (self.batch_size is None):
            raise ValueError("TrainConfig needs exactly one of batch_frames and batch_size")
        if self.mel_loss not in MEL_LOSSES:
            raise ValueError(f"TrainConfig.mel_loss must be one of {MEL_LOSSES}, got {self.mel_loss!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"TrainConfig.amp must be one of {AMP_MODES}, got {self.amp!r}")
        # a zero or negative grad_clip would reverse every step, a zero sigma make every loss NaN
        positive = ("max_steps", "checkpoint_every", "keep_last", "log_every", "max_nonfinite_steps", "grad_clip",
                    "guided_attention_sigma", "gate_pos_weight")
        for name in positive + tuple(name for name in ("batch_frames", "batch_size") if getattr(self, name) is not None):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "weight_decay", "guided_attention_weight", "guided_attention_half_life",
                     "ctc_weight", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.scheduled_sampling <= 1:
            raise ValueError(f"TrainConfig.scheduled_sampling must be in [0, 1], got {self.scheduled_sampling}")
        if self.scheduled_sampling_ramp < 0:
            raise ValueError(f"TrainConfig.scheduled_sampling_ramp must be >= 0, got {self.scheduled_sampling_ramp}")
        if not 0 < self.final_learning_rate <= self.learning_rate:
            raise ValueError("TrainConfig needs 0 < final_learning_rate <= learning_rate")



def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to final_learning_rate."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    floor = config.final_learning_rate / config.learning_rate
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def guided_attention_weight(step: int, config: TrainConfig) -> float:
    if config.guided_attention_half_life == 0:
        return config.guided_attention_weight
    return config.guided_attention_weight * 0.5 ** (step / config.guided_attention_half_life)


def scheduled_sampling_rate(step: int, config: TrainConfig) -> float:
    """The fraction of decoder steps fed the model's own prediction at `step` (see TrainConfig.scheduled_sampling)."""
    if config.scheduled_sampling_ramp == 0:
        return config.scheduled_sampling
    return config.scheduled_sampling * min(1.0, step / config.scheduled_sampling_ramp)
