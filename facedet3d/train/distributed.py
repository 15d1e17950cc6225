"""Data-parallel training across processes (``torchrun``): who this process is, its part of a batch,
and the gradient average that makes N processes step like one.

A training stage with ``devices: N > 1`` runs as N processes started by ``torchrun`` (the rule does
it; see :func:`launcher`). Every process builds the same networks from the same seed, draws the
same *global* batch indices for a step, and reads only its own rows of them
(:func:`rank_rows`). After each phase's backward pass the gradients are averaged over the
processes (:func:`average_gradients`), so every process takes the same optimiser step and the
weights stay equal — the single-process run with the global batch, up to float rounding. Only
rank 0 writes checkpoints, logs and results.

Gradients are averaged by hand (one flattened all-reduce per phase), as stylegan3's training loop
does, rather than by wrapping networks in DistributedDataParallel: a phase here forwards a network
several times (DetP's cycle) and through networks another phase optimises (the discriminators in
the generator's phase), which DDP's per-forward hooks do not allow without ``find_unused_parameters``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from facedet3d.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes (``size`` 1: not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and results."""
        return self.rank == 0


SINGLE = World()


def rank_rows(n: int, world: World = SINGLE) -> slice:
    """The rows of a global batch of ``n`` that ``world.rank`` computes: ``n / world.size`` contiguous rows.

    The global batch must divide evenly: each process's mean loss is then an equal part of the
    global mean, and the averaged gradient is the global batch's gradient.
    """
    if n % world.size:
        raise UserError(f"batch {n} does not split evenly over {world.size} devices; "
                        f"use a batch that is a multiple of devices")
    part = n // world.size
    return slice(world.rank * part, (world.rank + 1) * part)


def from_env() -> World:
    """This process's :class:`World` from the variables ``torchrun`` sets (RANK, WORLD_SIZE)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def needs_launch(devices: int) -> bool:
    """True when ``devices`` processes are asked for and this process was not started by torchrun."""
    return int(devices) > 1 and "WORLD_SIZE" not in os.environ  # torchrun sets it in every process


def launch(command: str, config_files: list[str], devices: int) -> None:
    """Run ``facedet3d COMMAND --config FILE...`` as ``devices`` processes under torchrun on this
    machine (``--standalone``: a free local port, no rendezvous server); return when all have ended.

    A failure of any process is one UserError; each process's own message is in the log above it.
    """
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(devices)}",
            "-m", "facedet3d.cli", command]
    for path in config_files:
        argv += ["--config", str(path)]
    log.info("%s: starting %d processes with torchrun: %s", command, devices, " ".join(argv[1:]))
    # Each process sets its own torch threads (the stage's `threads`); OMP_NUM_THREADS set here
    # only keeps torchrun from printing its banner about it.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    status = subprocess.run(argv, check=False, env=env).returncode
    if status:
        raise UserError(f"{command}: the {devices} torchrun processes failed (exit {status}); "
                        "the lines above name the first error")


def join(device: torch.device, devices: int) -> tuple[World, torch.device]:
    """This process's World and device for a stage configured with ``devices``: outside torchrun
    (``devices`` 1) ``(SINGLE, device)``; under torchrun, the process group joined (gloo on the
    CPU, nccl on CUDA) and, on CUDA, this process's own GPU (LOCAL_RANK)."""
    world = from_env()
    if world.size != int(devices):
        how = ("start it with `facedet3d STAGE`, which runs torchrun" if world.size == 1
               else f"torchrun started {world.size} processes")
        raise UserError(f"the stage is configured for devices: {devices}, but {how}")
    if world.size == 1:
        return SINGLE, device
    if not world.main:  # one log: rank 0's (the others still report warnings and errors)
        logging.getLogger().setLevel(logging.WARNING)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", world.rank))
        if local >= torch.cuda.device_count():
            raise UserError(f"devices: {world.size} were asked for but torch sees {torch.cuda.device_count()} GPU(s)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def leave(world: World) -> None:
    """Wait for every process, then close the process group: the end of training. Rank 0 goes on
    alone (evaluation, samples, summary); the others end."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(world: World) -> None:
    """Wait until every process has reached this point (nothing when not distributed)."""
    if world.size > 1:
        dist.barrier()


def average_gradients(params: list[torch.Tensor], loss: torch.Tensor, world: World) -> torch.Tensor:
    """Average the gradients of ``params`` and the value of ``loss`` over the processes, in one
    all-reduce of a flat buffer; returns the averaged loss (detached). Parameters without a
    gradient (unused in this phase, the same in every process) are left without one, so optimisers
    skip them exactly as in a single process.
    """
    loss = loss.detach().float()
    if world.size == 1:
        return loss
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.reshape(1)])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[-1]


def average_values(values: dict[str, float], world: World) -> dict[str, float]:
    """The mean over the processes of each logged value (the same keys in every process)."""
    if world.size == 1 or not values:
        return values
    keys = sorted(values)
    # nccl reduces only CUDA tensors (join() has set this process's GPU); gloo CPU ones.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    flat = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(flat)
    return {k: float(v) / world.size for k, v in zip(keys, flat.tolist())}
