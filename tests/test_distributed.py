"""Data-parallel training (facedet3d.train.distributed): 2 gloo processes on the CPU take the same
steps as one process with the same global batch, for the loop and for the real training stages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from facedet3d.config import ConfigError, load_config
from facedet3d.errors import UserError
from facedet3d.train.distributed import SINGLE, World, join, rank_rows
from facedet3d.train.loop import Phase, training_loop

STEPS, BATCH = 6, 8


def test_rank_rows_split_a_batch_into_equal_contiguous_parts():
    assert rank_rows(8) == slice(0, 8)
    parts = [rank_rows(8, World(r, 4)) for r in range(4)]
    assert [(p.start, p.stop) for p in parts] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    with pytest.raises(UserError, match="batch 6 does not split evenly over 4 devices"):
        rank_rows(6, World(0, 4))


def test_a_stage_configured_for_several_devices_outside_torchrun_says_how_to_start_it(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(UserError, match="devices: 2.*`facedet3d STAGE`, which runs torchrun"):
        join(torch.device("cpu"), 2)
    assert join(torch.device("cpu"), 1) == (SINGLE, torch.device("cpu"))


def test_a_batch_that_does_not_split_over_the_devices_is_named(tmp_path):
    config = yaml.safe_load(open("config.yaml"))
    config["train_detp"] |= {"devices": 3, "batch": 8}
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="'train_detp.batch': 8 does not split over devices: 3"):
        load_config([path])


# --- the loop: a toy generator/critic pair with the loop's awkward cases ---------------------------

def _toy_nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"g": nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4)),
            "d": nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)),
            "unused": nn.Linear(2, 2)}  # in the G optimiser, never in a loss: stays without a gradient


def _toy_phases(nets) -> list[Phase]:
    g, d = nets["g"], nets["d"]

    def g_loss(b, step):  # g forwarded twice (a cycle) and through d, which another phase optimises
        out = g(b["x"])
        loss = (out - b["y"]).pow(2).mean() + 0.1 * (g(out) - b["x"]).abs().mean() - 0.01 * d(out).mean()
        return loss, {"g": loss.item()}

    def d_loss(b, step):
        loss = nn.functional.softplus(d(g(b["x"]).detach())).mean() + nn.functional.softplus(-d(b["y"])).mean()
        return loss, {"d": loss.item()}

    g_params = list(g.parameters()) + list(nets["unused"].parameters())
    return [Phase("G", torch.optim.Adam(g_params, lr=1e-2), g_loss, clip=1.0),
            Phase("D", torch.optim.Adam(d.parameters(), lr=1e-2), d_loss, every=2)]


def _toy_batch(step: int, world: World = SINGLE) -> dict:
    rng = np.random.default_rng([7, step])
    x = torch.from_numpy(rng.standard_normal((BATCH, 4)).astype(np.float32))
    rows = rank_rows(BATCH, world)
    return {"x": x[rows], "y": (x.flip(-1) * 0.5)[rows]}


def _toy_rank(rank: int, size: int, init_file: str, run_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    torch.set_num_threads(1)
    nets = _toy_nets()
    training_loop(run_dir, nets, _toy_phases(nets), _toy_batch, STEPS, torch.device("cpu"), {"toy": 1},
                  log_every=3, checkpoint_every=3, desc="toy", world=World(rank, size))
    dist.destroy_process_group()


def test_two_gloo_processes_take_the_steps_of_one_process_with_the_global_batch(tmp_path):
    torch.set_num_threads(1)
    nets = _toy_nets()
    training_loop(tmp_path / "one", nets, _toy_phases(nets), _toy_batch, STEPS, torch.device("cpu"), {"toy": 1},
                  log_every=3, checkpoint_every=3, desc="toy")
    mp.spawn(_toy_rank, args=(2, str(tmp_path / "init"), str(tmp_path / "two")), nprocs=2, join=True)

    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert one["step"] == two["step"] == STEPS
    for net in ("g", "d"):
        for key, value in one["nets"][net].items():
            torch.testing.assert_close(two["nets"][net][key], value, rtol=0, atol=1e-5)
    # The parameter no loss reaches stayed untouched in both (Adam skips it: no gradient was made up).
    torch.testing.assert_close(two["nets"]["unused"]["weight"], _toy_nets()["unused"].weight.detach())
    # Rank 0 alone logged: one loss.csv with the processes' mean terms, equal to the single run's.
    rows = lambda p: [line.split(",") for line in (p / "loss.csv").read_text().splitlines()[1:]]  # noqa: E731
    for a, b in zip(rows(tmp_path / "one"), rows(tmp_path / "two")):
        assert a[0] == b[0] and np.allclose([float(v) for v in a[2:]], [float(v) for v in b[2:]], rtol=1e-5)


def test_without_two_processes_the_same_batch_split_in_halves_gives_other_weights(tmp_path):
    """The check above can fail: two halves trained as if each were the whole batch differ."""
    nets = _toy_nets()
    training_loop(tmp_path / "one", nets, _toy_phases(nets), _toy_batch, STEPS, torch.device("cpu"), {"toy": 1})
    half = _toy_nets()
    training_loop(tmp_path / "half", half, _toy_phases(half), lambda s: _toy_batch(s, World(0, 2)), STEPS,
                  torch.device("cpu"), {"toy": 1})
    diff = max((nets["g"].state_dict()[k] - half["g"].state_dict()[k]).abs().max().item() for k in half["g"].state_dict())
    assert diff > 1e-3


# --- the stages, started as the rules start them: `facedet3d train-... --config` -----------------------

def _train(results, stage: str, devices: int, overlay: dict) -> dict:
    path = results / f"devices{devices}.yaml"
    path.write_text(yaml.safe_dump({"results_dir": str(results), stage: {"devices": devices, **overlay}}))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    proc = subprocess.run(["facedet3d", stage.replace("_", "-"), "--config", "config.yaml",
                           "--config", "tests/configs/tiny.yaml", "--config", str(path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"log": proc.stderr, "final": torch.load(results / stage / "final.pt", weights_only=True),
            "summary": json.loads((results / stage / "summary.json").read_text())}


def _flat(nets: dict) -> torch.Tensor:
    return torch.cat([v.float().reshape(-1) for net in sorted(nets) for _, v in sorted(nets[net].items())])


@pytest.mark.slow
@pytest.mark.parametrize("stage, nets", [("train_rcan", lambda f: {"rcan": f["model"]}), ("train_detp", lambda f: f["nets"])])
def test_a_training_stage_on_two_devices_equals_one_device_with_the_same_batch(tiny_run, tmp_path, stage, nets):
    """2 gloo processes against 1 process with the same global batch (4): equal up to float rounding,
    which Adam amplifies where a gradient is near 0 (its first steps move every weight by ~lr
    whatever the gradient's size). The yardstick: the same single process with half the batch,
    i.e. two processes that did not average their gradients, is far further away."""
    overlay = {"device": "cpu", "threads": 1, "steps": 6, "log_every": 3, "checkpoint_every": 3}
    runs = {}
    for name, devices, batch in (("one", 1, 4), ("two", 2, 4), ("half", 1, 2)):
        results = tmp_path / name
        shutil.copytree(tiny_run[1], results, ignore=shutil.ignore_patterns("train_*", "evaluate"))
        runs[name] = _train(results, stage, devices, {**overlay, "batch": batch})
    assert "starting 2 processes with torchrun" in runs["two"]["log"]
    one, two, half = (_flat(nets(runs[k]["final"])) for k in ("one", "two", "half"))
    assert one.shape == two.shape
    rounding, unaveraged = (two - one).norm().item(), (half - one).norm().item()
    assert rounding < 0.05 * unaveraged, (rounding, unaveraged)
    # Rank 0 alone measured and wrote: the same held-out set, no partial files.
    for key in ("n_train", "n_test", "steps"):
        assert runs["one"]["summary"][key] == runs["two"]["summary"][key]
    assert not list((tmp_path / "two" / stage).glob("*.tmp*"))
