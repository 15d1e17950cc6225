"""Stage `train_detp`: train DetP against D_Exp, D_Face and D_Age (paper §3.2), measure it on held-out people.

Writes under ``results/train_detp/``:
  checkpoint.pt   training state (networks, optimisers, step, RNG, options): a killed run resumes
  final.pt        {"nets": {detp, d_exp, d_face, d_age}, "config": DetPConfig, "detail_scale", "options"}
  loss.csv        mean loss terms per maintenance step
  metrics.json    held-out (test) pairs: corr / l1 / delta_corr vs the extracted and the true D(I_y),
                  for DetP and the copy / zero / expression_mean baselines; au_consistency; the same
                  for the validation people under "val" (the split to compare settings on)
  summary.json    the same figures plus counts, steps, seconds, device
  samples.png     held-out rows: input image | D(I_x) | target expression | D̃(I_y) | D(I_y) | true D(I_y)
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np
import torch

from facedet3d.atomic import write_json_atomic
from facedet3d.detp import losses
from facedet3d.detp.data import Split, load_split, make_batch_fn, region_and_scale
from facedet3d.detp.metrics import expression_mean, pair_metrics, summarise
from facedet3d.detp.model import DetP, DetPConfig
from facedet3d.face.layout import AU_MAX
from facedet3d.paths import Results
from facedet3d.shards.format import split_digest
from facedet3d.train import adversarial
from facedet3d.train.adversarial import Discriminator
from facedet3d.train.checkpoint import save_checkpoint
from facedet3d.train.device import autocast, resolve_device
from facedet3d.train.distributed import join, leave
from facedet3d.train.loop import Phase, training_loop

log = logging.getLogger(__name__)
STAGE = "train_detp"


def build(cfg: DetPConfig, n_age: int = 82) -> dict[str, torch.nn.Module]:
    """DetP and its three discriminators (Eq. 6, 12, 15)."""
    return {
        "detp": DetP(cfg),
        "d_exp": Discriminator(cfg.size, {"aus": 17, "expr": cfg.n_expr}),
        "d_face": Discriminator(cfg.size, {"facenet": 512}),
        "d_age": Discriminator(cfg.size, {"age": n_age}),
    }


def _predict(g, detail, src: dict, tgt_aus, tgt_expr) -> torch.Tensor:
    return g(detail, src["aus"], tgt_aus, tgt_expr, src["shape"], src["facenet"], src["age"])["detail"]


def make_phases(nets: dict, s: dict) -> list[Phase]:
    """The generator phase (Eq. 9–11, 13, 14, 16–18 and the cycle), the discriminators' phase
    (Eq. 7, 8, 12, 15) and their lazy R1 phase (every ``r1_every`` steps)."""
    g, ds = nets["detp"], {k: nets[k] for k in ("d_exp", "d_face", "d_age")}
    w = s["weights"]
    stash: dict[str, torch.Tensor] = {}

    def g_loss(b: dict, step: int):
        src = {k: b[f"src_{k}"] for k in ("aus", "expr", "shape", "facenet", "age")}
        both = {k: torch.cat([v, v]) for k, v in src.items()}
        tgt_aus = torch.cat([b["pair_aus"], b["rand_aus"]])
        tgt_expr = torch.cat([b["pair_expr"], b["rand_expr"]])
        out = _predict(g, torch.cat([b["src_detail"]] * 2), both, tgt_aus, tgt_expr)
        n = len(b["src_detail"])
        pred_pair, fake = out[:n], out[n:]
        stash["fake"] = out.detach()
        de, df, da = ds["d_exp"](out), ds["d_face"](out), ds["d_age"](out)
        terms = {
            "regress": losses.regression(pred_pair, b["pair_detail"]),
            "adv": adversarial.g_nonsaturating(de["real"]) + adversarial.g_nonsaturating(df["real"])
            + adversarial.g_nonsaturating(da["real"]),
            "au": adversarial.head_l2(de["aus"], tgt_aus / AU_MAX),
            "expr": adversarial.head_l2(de["expr"], tgt_expr / AU_MAX),
            "id": adversarial.head_l2(df["facenet"], both["facenet"]),
            "age": adversarial.head_l2(da["age"], both["age"]),
            "cycle": losses.cycle(_predict(g, fake, {**src, "aus": b["rand_aus"]}, src["aus"], src["expr"]),
                                  b["src_detail"]),
        }
        total = sum(w[k] * v for k, v in terms.items())
        return total, {k: v.item() for k, v in terms.items()}

    def d_loss(b: dict, step: int):
        real, fake = b["src_detail"], stash["fake"]
        heads = {"d_exp": {"aus": b["src_aus"] / AU_MAX, "expr": b["src_expr"] / AU_MAX},
                 "d_face": {"facenet": b["src_facenet"]}, "d_age": {"age": b["src_age"]}}
        total, terms = 0.0, {}
        for name, d in ds.items():
            out_r, out_f = d(real), d(fake)
            adv = adversarial.d_nonsaturating(out_r["real"], out_f["real"])
            head = sum(adversarial.head_l2(out_r[k], t) for k, t in heads[name].items())
            total = total + adv + w["heads"] * head
            terms[f"{name}_adv"], terms[f"{name}_head"] = adv.item(), head.item()
        return total, terms

    def r1_loss(b: dict, step: int):
        real = b["src_detail"].detach().requires_grad_(True)
        penalty = sum(adversarial.r1_penalty(d(real)["real"], real) for d in ds.values())
        return penalty * (s["r1_gamma"] / 2 * s["r1_every"]), {"r1": penalty.item()}

    d_params = [p for d in ds.values() for p in d.parameters()]
    g_opt = torch.optim.Adam(g.parameters(), lr=s["lr"], betas=(0.5, 0.99))
    d_opt = torch.optim.Adam(d_params, lr=s["lr_d"], betas=(0.5, 0.99))
    return [Phase("G", g_opt, g_loss, clip=s["grad_clip"]), Phase("D", d_opt, d_loss, clip=s["grad_clip"]),
            Phase("R1", d_opt, r1_loss, every=s["r1_every"])]


def detp_config(s: dict, train: Split, scale: float) -> DetPConfig:
    return DetPConfig(size=s["size"], width=s["width"], max_width=s["max_width"], depth=s["depth"],
                      vec_features=s["vec_features"], refine_blocks=s["refine_blocks"],
                      n_expr=train.expr.shape[1], n_shape=train.shape.shape[1], detail_scale=scale)


def run(config: dict) -> dict:
    """Train, then measure on the test split; returns the summary (also written to summary.json).

    Data-parallel (``devices`` > 1, started by torchrun): every process trains; rank 0 alone then
    writes final.pt and measures; the others return an empty dict."""
    s, seed = config[STAGE], int(config["seed"])
    paths = Results.of(config)
    out = paths.stage(STAGE)
    world, device = join(resolve_device(s["device"]), s["devices"])
    torch.manual_seed(seed)
    torch.set_num_threads(s["threads"])
    train = load_split(paths.shard_index, "train", s["size"], stream=True)  # maps read per batch
    region, scale = region_and_scale(train.detail)  # face region; its std: mm per network unit
    cfg = detp_config(s, train, scale)
    nets = {k: v.to(device) for k, v in build(cfg).items()}
    phases = make_phases(nets, s)
    options = {"detp": asdict(cfg), STAGE: s, "seed": seed, "data": split_digest(paths.shard_index, "detp", "train")}
    started = time.perf_counter()
    # Cosine decay of both learning rates to 0 over the run (measured: held-out delta_corr 0.270
    # against 0.249 at a constant rate, same steps; README "Training").
    schedulers = {p.name: torch.optim.lr_scheduler.CosineAnnealingLR(p.optimizer, s["steps"]) for p in phases[:2]}
    last = training_loop(out, nets, phases, make_batch_fn(train, s["batch"], seed, scale), s["steps"], device,
                         options, log_every=s["log_every"], checkpoint_every=s["checkpoint_every"], desc=STAGE,
                         schedulers=schedulers, world=world)
    seconds = time.perf_counter() - started
    leave(world)
    if not world.main:
        return {}
    save_checkpoint(out / "final.pt", {"nets": {k: v.state_dict() for k, v in nets.items()}, "config": asdict(cfg),
                                       "detail_scale": scale, "options": options})
    for net in nets.values():
        net.eval()
    test = load_split(paths.shard_index, "test", s["size"])
    metrics = evaluate(nets, train, test, region, scale, device, k=s["expression_mean_k"])
    # The validation people's figures too: the split to compare settings on, keeping test for reporting.
    metrics["val"] = evaluate(nets, train, load_split(paths.shard_index, "val", s["size"]), region, scale, device,
                              k=s["expression_mean_k"])
    write_json_atomic(out / "metrics.json", metrics)
    from facedet3d.detp.samples import samples_png

    samples_png(nets["detp"], test, scale, device, paths, out / "samples.png", rows=s["sample_rows"])
    summary = {**metrics, "n_train": len(train), "n_test": len(test), "steps": s["steps"],
               "train_seconds": round(seconds, 1), "device": str(device), "detail_scale_mm": round(scale, 6),
               "parameters": {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()},
               "last_losses": last}
    write_json_atomic(paths.summary(STAGE), summary)
    log.info("train_detp: %s", {k: summary[k] for k in ("n_pairs", "vs_extracted", "vs_truth")})
    return summary


@torch.no_grad()
def predict(g, split: Split, src: np.ndarray, tgt: np.ndarray, scale: float, device, batch: int = 32) -> torch.Tensor:
    """D̃ (mm, CPU) of split's maps ``src`` towards the expressions (AUs, α_e) of ``tgt``."""
    outs = []
    for i in range(0, len(src), batch):
        a, b = src[i:i + batch], tgt[i:i + batch]
        cond = {k: v.to(device) for k, v in split.conditioning(a).items()}
        with autocast(device):
            pred = _predict(g, (split.detail[a] / scale).to(device), cond, split.aus[b].to(device),
                            split.expr[b].to(device))
        outs.append(pred.float().cpu() * scale)
    return torch.cat(outs)


def held_out_pairs(test: Split) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered (x, y) pair of one held-out person in two different expressions."""
    cand = test.pairs()
    src = np.array([i for i in sorted(cand) for _ in cand[i]], dtype=np.int64)
    tgt = np.array([j for i in sorted(cand) for j in cand[i]], dtype=np.int64)
    return src, tgt


@torch.no_grad()
def evaluate(nets: dict, train: Split, test: Split, region: torch.Tensor, scale: float, device,
             k: int = 8) -> dict:
    """metrics.json: DetP and the baselines on every held-out pair (see :mod:`.metrics`)."""
    src, tgt = held_out_pairs(test)
    if not len(src):
        return {"n_pairs": 0, "n_identities": 0, "vs_extracted": None, "vs_truth": None, "au_consistency": None}
    preds = {
        "detp": predict(nets["detp"], test, src, tgt, scale, device),
        "copy": test.detail[src],
        "zero": torch.zeros_like(test.detail[src]),
        "expression_mean": expression_mean(train.aus, train.detail, test.aus[tgt], k),
    }
    out = {"n_pairs": int(len(src)), "n_identities": int(len(set(test.identity[src]))),
           "expression_mean_k": k, "region_texels": int(region.sum())}
    refs = {"vs_extracted": test.detail} | ({"vs_truth": test.truth} if test.truth is not None else {})
    for name, ref in refs.items():
        given = test.detail[src]
        out[name] = summarise({m: pair_metrics(p, given, ref[src], ref[tgt], region) for m, p in preds.items()})
    if test.truth is None:
        out["vs_truth"] = None
    d_exp = nets["d_exp"]

    def au_error(maps: torch.Tensor) -> float:
        aus = torch.cat([d_exp((maps[i:i + 64] / scale).to(device))["aus"].float().cpu() for i in range(0, len(maps), 64)])
        return round(float((aus * AU_MAX - test.aus[tgt]).abs().mean()), 4)

    # D_Exp's AU head (trained on real maps) read on each prediction, against the target AUs y.
    out["au_consistency"] = {"detp": au_error(preds["detp"]), "copy": au_error(preds["copy"]),
                             "real_target": au_error(test.detail[tgt])}
    return out
