"""Checkpoints: one self-contained file per save, loadable with `torch.load(weights_only=True)`.

A checkpoint holds everything needed to use it alone (weights, model/feature/text configs, the symbol
table) and everything needed to resume exactly (optimizer, scheduler, a float16 run's grad scaler, sampler
position, RNG states). Configs go in as plain dicts and lists, never pickled objects, so loading runs no code.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

CHECKPOINT_FORMAT = 1
_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")
BEST_FILE = "best.pt"
_TEMPORARY = ".tmp-"  # a save in progress: step_NNNNNNNN.pt.tmp-PID


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # batches of this epoch already trained on, for a mid-epoch resume
    best_val_loss: float = math.inf


class CheckpointError(Exception):
    """A checkpoint that cannot be used as asked; str() is a one-line explanation."""


def step_file(step: int) -> str:
    return f"step_{step:08d}.pt"


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """Write atomically: a temporary file, fsync, rename. A killed save leaves the previous files intact.

    Refuses (CheckpointError) a model that holds NaN/inf: it would only ever make NaN mels and silent wavs."""
    nonfinite = [name for name, tensor in checkpoint["model"].items()
                 if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if nonfinite:
        raise CheckpointError(f"{path}: not saved: the model holds NaN/inf in {', '.join(nonfinite)}")
    temporary = path.with_name(f"{path.name}{_TEMPORARY}{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            torch.save({"checkpoint_format": CHECKPOINT_FORMAT} | checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch reports a failed write of its own as RuntimeError
        temporary.unlink(missing_ok=True)  # a full disk stays full with half a checkpoint on it
        raise CheckpointError(f"{path}: cannot write it ({error})") from None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint onto the CPU without unpickling code (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable taco checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("checkpoint_format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a taco checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def load_weights(model: torch.nn.Module, checkpoint: dict, path: str | os.PathLike) -> None:
    """Load the weights of the checkpoint at `path` into a model built from its own model config;
    CheckpointError when they do not fit it (a checkpoint edited or assembled by hand)."""
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        # torch puts each mismatch on a line of its own after a heading: the first says enough
        first, *rest = [line.strip() for line in str(error).splitlines()[1:] if line.strip()] or [str(error)]
        more = f", and {len(rest)} more" if rest else ""
        raise CheckpointError(f"{path}: its weights do not fit its model config ({first}{more})") from None


def step_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The step checkpoints in a folder, oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted(path for path in checkpoint_dir.iterdir() if _STEP_FILE.match(path.name))


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    checkpoints = step_checkpoints(checkpoint_dir)
    return checkpoints[-1] if checkpoints else None


def all_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Every checkpoint in a folder: the step checkpoints, oldest first, then best.pt if there is one."""
    best = checkpoint_dir / BEST_FILE
    return step_checkpoints(checkpoint_dir) + ([best] if best.is_file() else [])


def load_newest(checkpoint_dir: Path, warn: Callable[[str], None]) -> tuple[Path, dict] | None:
    """The checkpoint a run resumes from, and its path: of the newest readable step checkpoint and best.pt,
    the one that records the later step (the step checkpoint on a tie). None when the folder holds none.

    A checkpoint that cannot be read (a truncated or corrupt file) is passed over: `warn` gets a line that
    names it and the checkpoint used instead. Raises CheckpointError when none can be read.
    """
    readable, unreadable = [], []
    # newest first, and only as far back as the first readable one: each load reads a whole file
    for path in reversed(step_checkpoints(checkpoint_dir)):
        try:
            readable.append((path, load_checkpoint(path)))
            break
        except CheckpointError as error:
            unreadable.append(error)
    best = checkpoint_dir / BEST_FILE
    if best.is_file():
        try:
            readable.append((best, load_checkpoint(best)))
        except CheckpointError as error:
            unreadable.append(error)
    if not readable:
        if unreadable:
            raise CheckpointError(f"{checkpoint_dir}: no readable checkpoint; " + "; ".join(map(str, unreadable)))
        return None
    # max() keeps the first of equals: the step checkpoint
    path, checkpoint = max(readable, key=lambda item: item[1]["progress"]["step"])
    for error in unreadable:
        warn(f"{error}; resuming from {path} instead")
    return path, checkpoint


def remove_temporaries(checkpoint_dir: Path) -> None:
    """Delete the temporary files of saves that were killed before their rename. Only the folder's one
    writer may call this: another writer's save in progress would go too."""
    for leftover in checkpoint_dir.glob(f"*{_TEMPORARY}*"):
        leftover.unlink()


def prune_checkpoints(checkpoint_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (best.pt is separate and stays)."""
    for path in step_checkpoints(checkpoint_dir)[:-keep_last]:
        path.unlink()


def rng_states(device: torch.device) -> list[dict]:
    """The random states that training on `device` consumes (torch CPU and, on CUDA, every CUDA device), one
    dict per rank in rank order: under torchrun each rank draws its own dropout masks. Every rank must call
    it (it gathers), though only rank 0 writes. A run on the CPU leaves CUDA alone, even where there is one."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    if not dist.is_initialized():
        return [states]
    every_rank = [None] * dist.get_world_size()
    dist.all_gather_object(every_rank, states)
    return every_rank


def restore_rng_states(states: list[dict] | dict, rank: int, device: torch.device) -> None:
    """This rank's states from rng_states(), for a run on `device`; a checkpoint from before session 8
    holds rank 0's dict alone."""
    if isinstance(states, list):
        states = states[rank]
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        # one state per GPU the saving process saw; a machine with fewer takes the first ones
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])
