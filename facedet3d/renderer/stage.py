"""Stage `train_renderer`: train the rendering network R (paper §3.3, Eq. 21–35), measure it on held-out people.

Stage `train_renderer_ablation` (:mod:`.ablation`) runs the same with the Augmented Wrinkle and
Detailed Shading losses switched off (config section ``train_renderer_ablation``).

Writes under ``results/<stage>/``:
  checkpoint.pt   training state (a killed run resumes)
  final.pt        {"nets": {renderer, shading, d_exp}, "config": RendererConfig, "options"}
  loss.csv        mean loss terms per maintenance step
  metrics.json    held-out (test) people: R's psnr / ssim (re-rendering), new_expression {psnr, ssim,
                  facenet_distance}, detail_fidelity and detail_response (means over three yaws, and
                  by yaw); "methods": every figure of R and the baselines with bootstrap intervals
                  (:mod:`.evaluate`)
  summary.json    the same plus counts, steps, seconds, device
  samples.png     held-out rows (:mod:`.samples`)
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import torch

from facedet3d.atomic import write_json_atomic
from facedet3d.config import training_settings
from facedet3d.errors import UserError
from facedet3d.face.layout import AU_MAX
from facedet3d.paths import Results
from facedet3d.renderer import losses
from facedet3d.renderer.data import load_faces, make_batch_fn
from facedet3d.renderer.geometry import FaceGeometry, View
from facedet3d.renderer.model import Renderer, RendererConfig, ShadingNet, condition
from facedet3d.renderer.perceptual import feature_net
from facedet3d.shards.format import split_digest
from facedet3d.train import adversarial
from facedet3d.train.adversarial import Discriminator
from facedet3d.train.checkpoint import save_checkpoint
from facedet3d.train.device import resolve_device
from facedet3d.train.distributed import join, leave
from facedet3d.train.loop import Phase, training_loop

log = logging.getLogger(__name__)
STAGE = "train_renderer"
ABLATION = "train_renderer_ablation"


def settings(config: dict, stage: str = STAGE) -> dict:
    """The stage's settings: ``train_renderer``, with ``train_renderer_ablation``'s keys over it for the ablation."""
    return dict(training_settings(config, stage))


def fitted_model(config: dict):
    """The morphable model the extract stage fitted (R rasterizes its G_P and G_D)."""
    from facedet3d.extract.backends import fitting_model

    model = fitting_model(config)
    if model is None:
        raise UserError("train_renderer needs fitted morphable-model parameters (shape, expression, pose, light); "
                        "extract.backend fds provides none: use extract.backend builtin")
    return model


def renderer_config(s: dict, n_albedo: int) -> RendererConfig:
    return RendererConfig(size=s["size"], texture_size=s["texture_size"], features=s["features"], width=s["width"],
                          max_width=s["max_width"], depth=s["depth"], lr_factor=s["lr_factor"], n_albedo=n_albedo)


def build(cfg: RendererConfig) -> dict[str, torch.nn.Module]:
    """R, f_θ (Eq. 30) and D_Exp^RGB with its realism and AU heads (Eq. 31)."""
    return {"renderer": Renderer(cfg), "shading": ShadingNet(),
            "d_exp": Discriminator(cfg.size, {"aus": 17}, channels=3)}


def view_of(b: dict, size: int) -> View:
    return View(size, b["pose"], b["translation"], b["focal"], b["principal"], b["sh"])


def make_phases(nets: dict, s: dict, geometry: FaceGeometry, pcpt) -> list[Phase]:
    """R's phase (Eq. 26–30, 34, 35; f_θ learns with it), D_Exp^RGB's phase (Eq. 32, 33) and its lazy R1."""
    r, f_theta, d = nets["renderer"], nets["shading"], nets["d_exp"]
    w, size = s["weights"], s["size"]
    stash: dict[str, torch.Tensor] = {}

    def g_loss(b: dict, step: int):
        image, view = b["image"], view_of(b, size)
        raster = lambda verts: geometry.raster(verts, view, b["albedo"])  # noqa: E731
        verts_x = geometry.vertices(b["shape"], b["expr"])  # G_P of x; its G_D and G_D* displace it
        proxy, detailed = raster(verts_x), raster(geometry.displaced(verts_x, b["detail"]))
        cond = condition(b["aus"], b["albedo"], b["sh"])
        ntm = r.neural_texture(b["texture"])
        out = r(ntm, proxy, detailed, cond)
        photo, t_photo = losses.photometric(out["image"], image, proxy.mask, pcpt, w["pcpt"])
        photo_lr, _ = losses.photometric(out["lr"], image, proxy.mask, pcpt, w["pcpt"])
        total = w["photo"] * photo + w["photo_lr"] * photo_lr
        terms = {"photo": photo.detach(), "photo_lr": photo_lr.detach()} | {f"photo_{k}": v for k, v in t_photo.items()}
        if s["augw"] or s["dsl"]:
            fake = raster(geometry.displaced(verts_x, b["fake_detail"] * s["augw_gain"]))
            out_f = r(ntm, proxy, fake, cond, low=out["lr"])
            if s["augw"]:
                target = losses.augmented_image(image, detailed.shading, fake.shading, proxy.mask)
                terms["augw"] = losses.augmented_wrinkle(out_f["image"], target, proxy.mask)
                total = total + w["augw"] * terms["augw"]
            if s["dsl"]:
                terms["dsl"] = losses.detailed_shading(f_theta(out_f["image"]), fake.shading, fake.skin)
                total = total + w["dsl"] * terms["dsl"]
        # The target expression y: the same person's partner image (its α_e and D(I_y)) in x's view and light.
        verts_y = geometry.vertices(b["shape"], b["pair_expr"])
        proxy_y, detailed_y = raster(verts_y), raster(geometry.displaced(verts_y, b["pair_detail"]))
        out_y = r(ntm, proxy_y, detailed_y, condition(b["pair_aus"], b["albedo"], b["sh"]))
        stash["fake"], stash["real"] = out_y["image"].detach(), (image * proxy.mask).detach()
        dout = d(out_y["image"])
        terms["adv"] = adversarial.g_nonsaturating(dout["real"])
        terms["au"] = adversarial.head_l2(dout["aus"], b["pair_aus"] / AU_MAX)
        total = total + w["adv"] * terms["adv"] + w["au"] * terms["au"]
        return total, {k: float(v.detach()) if torch.is_tensor(v) else v for k, v in terms.items()}

    def d_loss(b: dict, step: int):
        out_r, out_f = d(stash["real"]), d(stash["fake"])
        adv = adversarial.d_nonsaturating(out_r["real"], out_f["real"])
        head = adversarial.head_l2(out_r["aus"], b["aus"] / AU_MAX)
        return adv + w["heads"] * head, {"d_adv": adv.item(), "d_head": head.item()}

    def r1_loss(b: dict, step: int):
        real = stash["real"].requires_grad_(True)
        penalty = adversarial.r1_penalty(d(real)["real"], real)
        return penalty * (s["r1_gamma"] / 2 * s["r1_every"]), {"r1": penalty.item()}

    g_params = list(r.parameters()) + list(f_theta.parameters())
    g_opt = torch.optim.Adam(g_params, lr=s["lr"], betas=(0.5, 0.99))
    d_opt = torch.optim.Adam(d.parameters(), lr=s["lr_d"], betas=(0.5, 0.99))
    return [Phase("G", g_opt, g_loss, clip=s["grad_clip"]), Phase("D", d_opt, d_loss, clip=s["grad_clip"]),
            Phase("R1", d_opt, r1_loss, every=s["r1_every"])]


def run(config: dict, stage: str = STAGE) -> dict:
    """Train, then measure on the test split; returns the summary (also written to summary.json).

    Data-parallel (``devices`` > 1, started by torchrun): every process trains; rank 0 alone then
    writes final.pt and measures; the others return an empty dict."""
    from facedet3d.renderer.evaluate import evaluate
    from facedet3d.renderer.samples import samples_png

    s, seed = settings(config, stage), int(config["seed"])
    paths = Results.of(config)
    out = paths.stage(stage)
    world, device = join(resolve_device(s["device"]), s["devices"])
    torch.manual_seed(seed)
    torch.set_num_threads(s["threads"])
    model = fitted_model(config)
    geometry = FaceGeometry(model, device)
    train = load_faces(paths, "train", geometry, s["size"], s["texture_size"], stream=True)
    cfg = renderer_config(s, model.num_albedo)
    nets = {k: v.to(device) for k, v in build(cfg).items()}
    pcpt = feature_net(s["perceptual"], s["perceptual_weights"]) if s["weights"]["pcpt"] > 0 else None
    if pcpt is not None:
        pcpt = pcpt.to(device)
    phases = make_phases(nets, s, geometry, pcpt)
    options = {"renderer": asdict(cfg), stage: s, "seed": seed,
               "data": split_digest(paths.shard_index, "detp", "train")}
    schedulers = {p.name: torch.optim.lr_scheduler.CosineAnnealingLR(p.optimizer, s["steps"]) for p in phases[:2]}
    started = time.perf_counter()
    last = training_loop(out, nets, phases, make_batch_fn(train, s["batch"], seed), s["steps"], device, options,
                         log_every=s["log_every"], checkpoint_every=s["checkpoint_every"], desc=stage,
                         schedulers=schedulers, world=world)
    seconds = time.perf_counter() - started
    leave(world)
    if not world.main:
        return {}
    save_checkpoint(out / "final.pt", {"nets": {k: v.state_dict() for k, v in nets.items()}, "config": asdict(cfg),
                                       "options": options})
    for net in nets.values():
        net.eval()
    test = load_faces(paths, "test", geometry, s["size"], s["texture_size"])
    metrics = evaluate(nets["renderer"], geometry, test, s, config, seed)
    metrics |= {"augw": bool(s["augw"]), "dsl": bool(s["dsl"])}
    write_json_atomic(out / "metrics.json", metrics)
    samples_png(nets["renderer"], geometry, test, out / "samples.png", rows=s["sample_rows"])
    summary = {**metrics, "n_train": len(train), "n_test": len(test), "steps": s["steps"],
               "train_seconds": round(seconds, 1), "device": str(device),
               "parameters": {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()},
               "last_losses": last}
    write_json_atomic(paths.summary(stage), summary)
    log.info("%s: %s", stage, {k: summary[k] for k in ("psnr", "new_expression", "detail_fidelity", "detail_response")})
    return summary
