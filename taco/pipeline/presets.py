"""Named training setups (`tiny`, `base`) and JSON files that override any of their fields.

A config file is a JSON object with up to three keys:

    {"preset": "tiny", "model": {"reduction_factor": 3}, "training": {"batch_frames": 4000}}

"preset" (default "tiny") names the setup to start from; "model" and "training" override fields of its
ModelConfig and TrainConfig.
"""

from __future__ import annotations

import json
from pathlib import Path

from taco.errors import read_utf8
from taco.pipeline.device import pick_device
from taco.pipeline.model import PRESETS as MODEL_PRESETS
from taco.pipeline.model import ModelConfig
from taco.pipeline.train_config import TrainConfig

TRAINING_PRESETS = {
    # NVIDIA/tacotron2 on LJSpeech with a GPU
    "base": TrainConfig(),
    # the bundled 21-minute corpus on a 2-core CPU: small padded batches (about 15 utterances), a short warm-up,
    # checkpoints and alignment plots every few minutes; guided attention (the mean over valid cells) at
    # Tachibana et al.'s sigma 0.2, fading over the first few thousand steps: the setup whose word error
    # rates docs/benchmarks.md reports (the sum-over-tokens term of earlier sessions wanted 0.1).
    # Five times NVIDIA's learning rate with scheduled sampling 0.5: free-running WER 0.49 on the bundled corpus
    # and 0.84 on the held-out one at 1250 steps (3 seeds), against 0.70 / 0.94 at 2e-3 and 0.9-1.2 with
    # neither (docs/benchmarks.md, sessions 11-15, with the convolutions' dropout then at 0.5). The cosine
    # runs over 3000 steps, past the benchmark's 20 minutes (about 1200 steps), because the high rate is what
    # teaches the sounds: a cosine ending at 1200 steps scored 0.34 there against 0.275 (session 19)
    "tiny": TrainConfig(
        batch_frames=6000,
        learning_rate=5e-3,
        warmup_steps=100,
        max_steps=3000,
        guided_attention_sigma=0.2,
        guided_attention_half_life=2000,
        scheduled_sampling=0.5,
        scheduled_sampling_ramp=500,
        # L1 (Tacotron 1, Coqui) instead of the paper's MSE: free-running WER at 1300 steps (about 20 minutes)
        # 0.243 against MSE's 0.275-0.278 on the bundled corpus and 0.401 against 0.423-0.465 on kal16, which
        # no setting was chosen on (3 seeds; docs/benchmarks.md, session 20). On the held-out corpus it starts
        # slower (worse at 1000 steps) and is level by 1300: 0.516 against 0.523 (session 21)
        mel_loss="l1",
        checkpoint_every=250,
        log_every=10,
        num_workers=1,
    ),
}
CONFIG_KEYS = ("preset", "model", "training")


def default_preset(device: str | None) -> str:
    """The preset a run without a config gets: `base` on CUDA, where a user with a corpus like LJSpeech
    wants the paper's model and not a toy; `tiny` on the CPU, where `base` would take days."""
    return "base" if pick_device(device).type == "cuda" else "tiny"


def load_config(spec: str) -> tuple[ModelConfig, TrainConfig]:
    """`spec` is a preset name ("tiny", "base") or the path of a JSON config file."""
    if spec in TRAINING_PRESETS:
        return MODEL_PRESETS[spec], TRAINING_PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"config {spec!r} is neither a preset ({', '.join(TRAINING_PRESETS)}) nor a file")
    try:
        overrides = json.loads(read_utf8(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return configs_from(overrides, str(path))


def configs_from(overrides, source: str = "config") -> tuple[ModelConfig, TrainConfig]:
    """A config file's content, {"preset": name, "model": {...}, "training": {...}}, as the two configs.

    Each given field replaces the preset's ("tiny" when no preset is named). `source` names the file in errors.
    """
    if not isinstance(overrides, dict) or set(overrides) - set(CONFIG_KEYS):
        raise ValueError(f"{source}: a config file is a JSON object with only the keys {CONFIG_KEYS}")
    preset = overrides.get("preset", "tiny")
    if not isinstance(preset, str) or preset not in TRAINING_PRESETS:
        raise ValueError(f"{source}: unknown preset {preset!r}; choose one of {sorted(TRAINING_PRESETS)}")
    for key in ("model", "training"):
        if not isinstance(overrides.get(key, {}), dict):
            raise ValueError(f"{source}: {key!r} must be a JSON object of fields")
    try:
        model = ModelConfig.from_dict(MODEL_PRESETS[preset].to_dict() | overrides.get("model", {}))
        training = TrainConfig.from_dict(TRAINING_PRESETS[preset].to_dict() | overrides.get("training", {}))
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    return model, training
