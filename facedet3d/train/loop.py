"""The one training loop: phases per step, a periodic maintenance step, atomic checkpoints, resume.

Modelled on stylegan2-ada's ``training_loop``: a step runs each :class:`Phase` in turn (the
generator's, then each discriminator's), every phase minimising its own loss with its own
optimiser. All randomness of a step comes from ``batch_fn(step)``, which must be a pure function
of the step (e.g. ``np.random.default_rng([seed, step])``); together with the saved torch RNG
state this makes a resumed run bit-identical to an uninterrupted one on the CPU.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from facedet3d.errors import UserError
from facedet3d.train.checkpoint import load_checkpoint, restore, save_checkpoint
from facedet3d.train.device import autocast
from facedet3d.train.distributed import SINGLE, World, average_gradients, average_values, barrier

log = logging.getLogger(__name__)

LossFn = Callable[[dict, int], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class Phase:
    """One optimisation phase of a step: ``optimizer`` steps on ``loss(batch, step)``.

    ``loss`` returns the scalar to minimise and the named terms to log (floats). ``every`` runs
    the phase only on steps divisible by it (lazy regularisation, as stylegan2's R1 phase).
    ``clip`` clips the gradient norm of the optimiser's parameters (None: no clipping).
    """

    name: str
    optimizer: torch.optim.Optimizer
    loss: LossFn
    every: int = 1
    clip: float | None = None


def training_loop(run_dir: str | Path, nets: dict[str, nn.Module], phases: list[Phase],
                  batch_fn: Callable[[int], dict], steps: int, device: torch.device, options: dict,
                  log_every: int = 50, checkpoint_every: int = 200, desc: str = "train",
                  schedulers: dict[str, object] | None = None, world: World = SINGLE) -> dict:
    """Train ``nets`` for ``steps`` steps; resume from ``run_dir/checkpoint.pt`` when it exists.

    Phases of one step:
      1. ``batch = batch_fn(step)`` (moved to ``device``);
      2. for each phase due this step: zero its gradients, compute its loss under bf16 autocast on
         CUDA, backpropagate, clip, step its optimiser; collect its logged terms;
      3. schedulers step.
    A checkpoint written with other ``options`` (sizes, steps, data digest...) is not resumed: the
    run starts over (and says so), since resuming only continues the same run.
    Maintenance every ``log_every`` steps and at the end: the mean of each logged term since the
    last maintenance goes to ``run_dir/loss.csv`` and a status line to the log; every
    ``checkpoint_every`` steps and at the end, ``checkpoint.pt`` is written atomically (networks,
    optimisers, schedulers, step, torch RNG state, options).

    Data-parallel (``world.size`` > 1, one process per device under torchrun; see
    :mod:`.distributed`): each process gets its rows of the global batch from
    ``batch_fn(step, world)``; after each phase's backward pass the gradients (and the loss) are
    averaged over the processes, so all take the same step; logged terms are averaged over them too.
    Only rank 0 writes ``loss.csv``, checkpoints and the progress bar; every process resumes from
    the same checkpoint.

    Returns the last maintenance row (step, seconds, mean terms).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    schedulers = schedulers or {}
    ckpt_path = run_dir / "checkpoint.pt"
    start_step = _resume(ckpt_path, nets, phases, schedulers, options, desc, world)
    if start_step:
        log.info("%s: resumed at step %d from %s", desc, start_step, ckpt_path)
    loss_log = _LossLog(run_dir / "loss.csv", start_step)
    sums: dict[str, list[float]] = {}
    started, row = time.perf_counter(), {"step": start_step}
    for net in nets.values():
        net.train()
    with tqdm(total=steps, initial=start_step, desc=desc, unit="step", mininterval=5.0, disable=not world.main) as bar:
        for step in range(start_step, steps):
            batch = batch_fn(step) if world.size == 1 else batch_fn(step, world)
            for key, value in run_step(phases, _to_device(batch, device), step, device, desc, world).items():
                sums.setdefault(key, []).append(value)
            for scheduler in schedulers.values():
                scheduler.step()
            bar.update(1)
            done = step + 1
            if done % log_every == 0 or done == steps:  # maintenance
                means = average_values({k: float(np.mean(v)) for k, v in sums.items()}, world)
                row = {"step": done, "seconds": round(time.perf_counter() - started, 2), **dict(sorted(means.items()))}
                sums = {}
                if world.main:  # rank 0 logs and checkpoints
                    loss_log.write(row)
                    log.info("%s step %d/%d %s", desc, done, steps,
                             " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("step",)))
            if world.main and (done % checkpoint_every == 0 or done == steps):
                save_checkpoint(ckpt_path, _state(nets, phases, schedulers, done, options))
    return row


def run_step(phases: list[Phase], batch: dict, step: int, device: torch.device, desc: str = "train",
             world: World = SINGLE) -> dict:
    """One step: every phase due runs zero_grad, its loss (bf16 autocast on CUDA), backward, the
    gradients' average over the processes (data-parallel only), a check that the loss is finite,
    clip, optimiser step. Returns the logged terms as {"<phase>/<term>": float}."""
    logged = {}
    for phase in phases:
        if step % phase.every:
            continue
        phase.optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss, terms = phase.loss(batch, step)
        loss.backward()
        params = [p for g in phase.optimizer.param_groups for p in g["params"]]
        loss = average_gradients(params, loss, world)
        if not torch.isfinite(loss):  # the same averaged value in every process: all stop together
            raise UserError(f"{desc}: the {phase.name} loss is {loss.item()} at step {step + 1}; "
                            "lower the learning rate or the loss weights")
        if phase.clip is not None:
            torch.nn.utils.clip_grad_norm_(params, phase.clip)
        phase.optimizer.step()
        logged |= {f"{phase.name}/{k}": float(v) for k, v in terms.items()}
    return logged


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _state(nets, phases, schedulers, step: int, options: dict) -> dict:
    return {
        "step": step,
        "nets": {k: v.state_dict() for k, v in nets.items()},
        "optimizers": {p.name: p.optimizer.state_dict() for p in phases},
        "schedulers": {k: v.state_dict() for k, v in schedulers.items()},
        "torch_rng": torch.get_rng_state(),
        "options": options,
    }


def _resume(path: Path, nets, phases, schedulers, options: dict, desc: str, world: World) -> int:
    """The step to start at: the checkpoint's (its state loaded) or 0. Every process reads the
    same file before rank 0 may delete a checkpoint of other options."""
    state = load_checkpoint(path) if path.is_file() else None
    barrier(world)
    if state is None:
        return 0
    if state.get("options") != options:
        log.warning("%s: %s was written with other options; starting over", desc, path)
        if world.main:
            path.unlink()
        return 0

    def load() -> None:
        for name, net in nets.items():
            net.load_state_dict(state["nets"][name])
        for phase in phases:
            phase.optimizer.load_state_dict(state["optimizers"][phase.name])
        for name, scheduler in schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        torch.set_rng_state(state["torch_rng"])

    restore(path, "checkpoint", load)
    return int(state["step"])


class _LossLog:
    """``loss.csv``: one row per maintenance step; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        self.columns: list[str] | None = None
        self.rows: list[dict] = []
        if start_step and path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
            self.columns = list(self.rows[0]) if self.rows else None

    def write(self, row: dict) -> None:
        self.columns = self.columns or list(row)
        self.rows.append({k: row.get(k, "") for k in self.columns})
        from facedet3d.data.manifest import write_csv

        write_csv(self.path, self.columns, self.rows)
