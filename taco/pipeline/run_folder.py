"""The run folder: everything rank 0 writes while training (config, checkpoints, logs, plots, samples)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from taco.features.store import FeatureStore
from taco.features.text import token_labels
from taco.pipeline.batching import collate, to_device
from taco.pipeline.checkpoint import (BEST_FILE, Progress, prune_checkpoints, remove_temporaries,
                                     save_checkpoint, step_file)
from taco.pipeline.device import forked_rng
from taco.pipeline.griffin_lim import griffin_lim, mel_to_magnitude
from taco.pipeline.losses import LossTerms
from taco.pipeline.model import ModelConfig, Tacotron2
from taco.pipeline.plots import alignment_figure, mel_figure, save_figure
from taco.pipeline.synth import inference_item, peak_normalize, write_wav
from taco.pipeline.train_config import TrainConfig


# The run folder's checkpoints: step_NNNNNNNN.pt (the last few) and best.pt
CHECKPOINT_DIR = "checkpoints"


class RunWriter:
    """Everything rank 0 writes into the run folder."""

    def __init__(self, run_dir: Path, store: FeatureStore, model_config: ModelConfig, train_config: TrainConfig):
        self.run_dir = run_dir
        self.store = store
        self.model_config = model_config
        self.train_config = train_config
        (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        remove_temporaries(run_dir / CHECKPOINT_DIR)
        config = {
            "model": model_config.to_dict(),
            "training": train_config.to_dict(),
            "features": store.info["feature_config"],
            "text": store.info["text_config"],
            "store": str(store.path.resolve()),
            "store_fingerprint": store.fingerprint,
            "store_content": store.content_fingerprint,
        }
        (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        self.tensorboard = SummaryWriter(str(run_dir / "logs"))
        # the first validation utterance, drawn and voiced at every checkpoint: (row, tokens, mel), None without one
        val_rows = store.split_indices("val")
        self.sample = (int(val_rows[0]), *store[int(val_rows[0])]) if len(val_rows) else None

    def scalars(self, prefix: str, terms: LossTerms, step: int, **extra: float) -> None:
        for name, value in terms._asdict().items():
            self.tensorboard.add_scalar(f"{prefix}/{name}", float(value), step)
        for name, value in extra.items():
            self.tensorboard.add_scalar(f"{prefix}/{name}", value, step)

    def checkpoint_dict(self, model, optimizer, scheduler, scaler, sampler, state: Progress, rng: list[dict]) -> dict:
        """`rng`: rng_states(), which every rank gathers before rank 0 writes. `scaler`: a float16 run's
        GradScaler, whose loss scale its resume takes up; None for other runs, which save none."""
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            # the DataLoader's prefetching runs the sampler ahead: record what training actually consumed
            "sampler": sampler.state_dict(consumed=state.batches_done),
            "progress": dataclasses.asdict(state),
            "rng": rng,
            "model_config": self.model_config.to_dict(),
            "training_config": self.train_config.to_dict(),
            "feature_config": self.store.info["feature_config"],
            "text_config": self.store.info["text_config"],
            "symbols": list(self.store.symbols),
            "store": str(self.store.path.resolve()),
            "store_fingerprint": self.store.fingerprint,
            "store_content": self.store.content_fingerprint,
        } | ({"scaler": scaler.state_dict()} if scaler is not None else {})

    def checkpoint(self, model, optimizer, scheduler, scaler, sampler, state: Progress, rng: list[dict]) -> None:
        """A step checkpoint (pruned to the last keep_last), then the samples of the model as it is now."""
        directory = self.run_dir / CHECKPOINT_DIR
        save_checkpoint(directory / step_file(state.step), self.checkpoint_dict(model, optimizer, scheduler, scaler, sampler, state, rng))
        prune_checkpoints(directory, self.train_config.keep_last)
        self.samples(model, state.step)

    def validation(self, val_loss: LossTerms, state: Progress, model, optimizer, scheduler, scaler, sampler,
                   rng: list[dict]) -> None:
        """Log the validation loss; a new best also becomes best.pt, resuming from `state`."""
        self.scalars("val", val_loss, state.step)
        if val_loss.total.item() < state.best_val_loss:
            state.best_val_loss = val_loss.total.item()
            checkpoint = self.checkpoint_dict(model, optimizer, scheduler, scaler, sampler, state, rng)
            save_checkpoint(self.run_dir / CHECKPOINT_DIR / BEST_FILE, checkpoint)

    @torch.no_grad()
    def samples(self, model: Tacotron2, step: int) -> None:
        """Alignment plots (teacher-forced and free-running) and Griffin-Lim audio of the first validation utterance."""
        if self.sample is None:
            return
        row, tokens, mel = self.sample
        store = self.store
        device = next(model.parameters()).device
        batch = to_device(collate([(tokens, mel)], self.model_config.reduction_factor), device)
        model.eval()
        with forked_rng(device):
            forced = model(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"])
            free = model.infer(batch["tokens"], batch["token_lens"])
        labels = token_labels(tokens, store.text_config.symbols_version)
        forced_alignment = forced.alignments[0].float().cpu().numpy()
        predicted, free_alignment, _ = inference_item(free, 0, len(tokens), self.model_config.reduction_factor)
        plots = self.run_dir / "plots"
        for name, alignment in (("teacher_forced", forced_alignment), ("free_running", free_alignment)):
            figure = alignment_figure(alignment, labels, f"{store.ids[row]}, step {step}, {name.replace('_', ' ')}")
            self.tensorboard.add_figure(f"alignment/{name}", figure, step, close=False)
            save_figure(figure, plots / f"alignment_{name}_step_{step:08d}.png")
        figure = mel_figure([mel, predicted], ["target", f"free running, step {step}"])
        self.tensorboard.add_figure("mel", figure, step, close=False)
        save_figure(figure, plots / f"mel_step_{step:08d}.png")
        features = store.feature_config
        # (T, n_mels) -> (n_mels, T) -> (n_freqs, T)
        magnitude = mel_to_magnitude(torch.from_numpy(predicted.T.copy()), features)
        wave = peak_normalize(griffin_lim(magnitude, features, self.train_config.griffin_lim_iterations).numpy())
        self.tensorboard.add_audio("griffin_lim", wave[None, :], step, sample_rate=features.sample_rate)
        write_wav(self.run_dir / "samples" / f"step_{step:08d}.wav", wave, features.sample_rate)
        if free.hit_step_limit[0]:
            tqdm.write(f"step {step}: {store.ids[row]} reached the decoder step limit (the gate never fired)", file=sys.stderr)

    def close(self) -> None:
        self.tensorboard.close()
