"""Where training runs: ``auto`` (CUDA when present, else CPU), ``cuda`` or ``cpu``; bf16 autocast on CUDA."""

from __future__ import annotations

import contextlib

import torch

from facedet3d.errors import UserError

DEVICES = ("auto", "cuda", "cpu")


def resolve_device(name: str) -> torch.device:
    """The torch device for a ``train.device`` setting; a clear error when CUDA is asked for and absent."""
    if name not in DEVICES:
        raise UserError(f"device {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but torch sees no CUDA GPU; use device: auto or cpu")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); full float32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
