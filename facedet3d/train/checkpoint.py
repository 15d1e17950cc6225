"""Checkpoints as plain dicts of tensors and values, written atomically, read with ``weights_only=True``.

``checkpoint.pt`` (training state: networks, optimisers, step, RNG states, options) lets a killed
run resume; ``final.pt`` (the trained networks and their options only) is what later stages load.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from facedet3d.atomic import atomic_path
from facedet3d.errors import UserError


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` (a plain dict) atomically: a killed write leaves the previous file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def restore(path: str | Path, what: str, load):
    """Return ``load()`` (building networks from a checkpoint's parts, load_state_dict calls); a part
    that is missing or does not fit this configuration is one clear line naming the file."""
    try:
        return load()
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise UserError(f"{what} {path} does not fit this configuration ({first_line(err)}); "
                        "delete it to start over, or rebuild it") from None


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """Read a checkpoint safely (no code runs); a missing, truncated or foreign file is one clear line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(f"{what} {path} is truncated or not a facedet3d checkpoint ({first_line(err)}); "
                        "delete it to start over") from None
    if not isinstance(state, dict):
        raise UserError(f"{what} {path} does not hold a dict; delete it to start over")
    return state
