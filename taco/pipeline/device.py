"""The device a command runs on: "cpu", "cuda" or "cuda:N", checked to exist before any work starts."""

from __future__ import annotations

import torch


def pick_device(requested: str | None) -> torch.device:
    """`requested` as a torch device, or CUDA when available for None. ValueError for a name torch does
    not know, or a CUDA device this machine lacks."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:  # torch's message lists twenty device types taco cannot run on
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {requested!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} asked for, but this torch sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ValueError(f"device {requested!r} asked for, but this machine has {count} CUDA devices")
    return device


def forked_rng(device: torch.device):
    """A context whose random draws leave the global generator, and on CUDA the device's, as they were."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
