"""metrics.json of the renderer stages: R and simple baselines on the held-out (test) people.

Baselines, each drawn with the same geometry, camera and mask as R:
  texture  the classical textured mesh: T(I_x) (the unwrapped photo colours) sampled with the
           geometry's UV map; it ignores the geometry's details;
  model    the fitted morphable model's albedo γ under the SH light l: γ · L_Sph(G_D, l), the
           details drawn exactly as shading (no photo texture at all);
  copy     (new expression only) the input photo I_x itself, as if nothing could be rendered.

Figures (means over images or pairs, each with a 95 % bootstrap interval over them):
  rerender        Î_x against I_x: psnr, ssim on the face mask;
  new_expression  person x rendered with the geometry fitted to their own image I_y in another
                  expression (α_s, α_e, extracted D(I_y)), I_y's camera and light, against I_y: psnr,
                  ssim, and facenet_distance (cosine distance of the FaceNet embeddings, faces masked);
                  each held-out image with its same-person partner of the largest AU change;
  detail_fidelity corr of the high-passed luminance of the rendering with that of the details'
                  shading L_Sph(G_D*, l) − L_Sph(G_P, l), over the skin, where D* is another held-out
                  person's extracted map times ``fidelity_gain`` (fake wrinkles, as AugW but on held-out
                  people); at each yaw of eval_yaws_deg. At the extracted maps' own amplitude
                  (``detail_fidelity_gain1``) their shading moves the image by ~0.2 % (std), below
                  8-bit quantisation, and every method scores ~0, even the model render that draws
                  the details exactly: the gain makes the details visible, as FDS's maps are;
  detail_response corr of the luminance change of the rendering with that of the shading when the
                  detail map goes from zero to D* (same views, the maps' own amplitude): what R does
                  with the details, whatever their size;
  detail_strength the slope of that luminance change on the shading's (D* times the gain): how much
                  of the details' contrast R draws; the model render shows what an exact renderer
                  draws. The "_gain1" / "_gain" tables hold each figure at the other amplitude.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from facedet3d.data.grids import to_uint8
from facedet3d.render.camera import place_face
from facedet3d.render.color import to_srgb
from facedet3d.render.rasterize import sample_texture
from facedet3d.renderer import metrics as M
from facedet3d.renderer.data import Faces, as_float
from facedet3d.renderer.geometry import FaceGeometry, View
from facedet3d.renderer.model import Renderer, condition

BATCH = 32


@torch.no_grad()
def render(r: Renderer, geometry: FaceGeometry, texture: torch.Tensor, shape, albedo, expr, detail, aus,
           view: View) -> dict:
    """R's rendering of a batch: texture maps (B, 4, T, T) in [0, 1], geometry (α_s, α_e, D mm), γ,
    target AUs, view. Returns {"image", "lr", "detail"} (CPU float32) and the rasters "proxy", "detailed"."""
    dev = geometry.device
    view = View(view.size, *(t.to(dev) for t in (view.pose, view.translation, view.focal, view.principal, view.sh)))
    shape, albedo, expr, detail, aus = (t.to(dev) for t in (shape, albedo, expr, detail, aus))
    verts = geometry.vertices(shape, expr)
    proxy = geometry.raster(verts, view, albedo)
    detailed = geometry.raster(geometry.displaced(verts, detail), view, albedo)
    ntm = r.neural_texture(texture.to(dev))
    out = r(ntm, proxy, detailed, condition(aus, albedo, view.sh))
    cpu = lambda raster: type(raster)(*(t.float().cpu() for t in raster))  # noqa: E731
    return {**{k: v.float().cpu() for k, v in out.items()}, "proxy": cpu(proxy), "detailed": cpu(detailed)}


def baselines(texture: torch.Tensor, raster) -> dict[str, torch.Tensor]:
    """The texture and model renderings (sRGB, masked) of a raster; texture (B, 4, T, T) in [0, 1]."""
    tex = sample_texture(texture[:, :3].to(raster.uv), raster.uv, raster.mask[:, 0] > 0)
    return {"texture": tex * raster.mask, "model": to_srgb(raster.shaded_albedo) * raster.mask}


def landmarks_px(geometry: FaceGeometry, shape, expr, view: View) -> np.ndarray:
    """(B, 68, 2) pixel positions of the model's landmarks in ``view`` (proxy geometry)."""
    verts = geometry.vertices(shape, expr).cpu()
    lm = geometry.model.landmarks_3d(verts)
    return view.camera().project(place_face(lm, view.pose, 0.0, translation=view.translation))[..., :2].numpy()


def _embed(embedder, images: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
    return embedder.embed_many([to_uint8(im) for im in images.permute(0, 2, 3, 1).numpy()], list(landmarks))


def _chunks(n: int):
    for i in range(0, n, BATCH):
        yield np.arange(i, min(n, i + BATCH))


def partners(test: Faces) -> tuple[np.ndarray, np.ndarray]:
    """Each held-out image x with its same-person partner y of the largest AU change."""
    cand = test.pairs()
    src = np.array(sorted(cand), dtype=np.int64)
    tgt = np.array([max(cand[i], key=lambda j: float((test.aus[j] - test.aus[i]).abs().sum())) for i in src],
                   dtype=np.int64)
    return src, tgt


def donors(test: Faces) -> np.ndarray:
    """For each held-out image, a held-out image of another person: its extracted map is the fake D*."""
    n = len(test)
    z = (np.arange(n) + n // 2) % n
    for i in range(n):
        while test.identity[z[i]] == test.identity[i] and n > 1:
            z[i] = (z[i] + 1) % n
    return z


def _summaries(values: dict[str, list], n_boot: int, seed: int) -> dict:
    return {name: {k: M.bootstrap(np.concatenate(v), n_boot, seed) for k, v in figs.items()}
            for name, figs in values.items()}


def _collect(store: dict, name: str, **figs) -> None:
    for k, v in figs.items():
        store.setdefault(name, {}).setdefault(k, []).append(np.asarray(v, np.float64))


def evaluate(r: Renderer, geometry: FaceGeometry, test: Faces, s: dict, config: dict, seed: int) -> dict:
    """The figures above; bootstrap with ``s["bootstrap"]`` resamples."""
    from facedet3d.annotate.identity import FaceNetEmbedder, cosine_distance

    n_boot = int(s["bootstrap"])
    texture = as_float(test.texture)
    image = as_float(test.image)

    # Re-rendering: each held-out image from its own texture map, geometry, camera and light.
    rer: dict = {}
    for i in _chunks(len(test)):
        out = render(r, geometry, texture[i], test.shape[i], test.albedo[i], test.expr[i], test.detail[i],
                     test.aus[i], test.view(i))
        mask, real = out["proxy"].mask, image[i] * out["proxy"].mask
        for name, pred in {"renderer": out["image"], **baselines(texture[i], out["detailed"])}.items():
            _collect(rer, name, psnr=M.psnr(pred, real, mask), ssim=M.ssim(pred, real, mask))

    # New expression: x's texture, y's fitted geometry, camera and light, against the photo I_y.
    src, tgt = partners(test)
    embedder = FaceNetEmbedder.from_config(config)
    newx: dict = {}
    for c in _chunks(len(src)):
        x, y = src[c], tgt[c]
        vy = test.view(y)
        out = render(r, geometry, texture[x], test.shape[y], test.albedo[x], test.expr[y], test.detail[y],
                     test.aus[y], vy)
        mask = out["proxy"].mask
        real = image[y] * mask
        lm_y = landmarks_px(geometry, test.shape[y], test.expr[y], vy)
        lm_x = landmarks_px(geometry, test.shape[x], test.expr[x], test.view(x))
        real_emb = _embed(embedder, real, lm_y)
        own = render(r, geometry, texture[x], test.shape[x], test.albedo[x], test.expr[x], test.detail[x],
                     test.aus[x], test.view(x))["proxy"].mask
        preds = {"renderer": out["image"], **baselines(texture[x], out["detailed"]), "copy": image[x] * own}
        for name, pred in preds.items():
            emb = _embed(embedder, pred, lm_x if name == "copy" else lm_y)
            dist = [cosine_distance(a, b) for a, b in zip(emb, real_emb)]
            # The copy is not aligned with I_y: its psnr / ssim compare the two crops as they are.
            _collect(newx, name, psnr=M.psnr(pred, real, mask), ssim=M.ssim(pred, real, mask), facenet_distance=dist)

    # Detail fidelity and response at each yaw: x with another held-out person's map D*.
    z = donors(test)
    gain = float(s["fidelity_gain"])
    names = ("fidelity", "response", "strength")
    detail = {(n, g): {} for n in names for g in (1.0, gain)}
    for yaw_deg in s["eval_yaws_deg"]:
        key = f"yaw_{yaw_deg:+d}"
        stores = {k: {} for k in detail}
        for i in _chunks(len(test)):
            view = test.view(i).with_yaw(math.radians(yaw_deg))
            args = (texture[i], test.shape[i], test.albedo[i], test.expr[i])
            flat = render(r, geometry, *args, torch.zeros_like(test.detail[i]), test.aus[i], view)
            shade0, base_0 = flat["detailed"].shading, baselines(texture[i], flat["detailed"])
            for g in (1.0, gain):
                fake = render(r, geometry, *args, test.detail[z[i]] * g, test.aus[i], view)
                shade, skin = fake["detailed"].shading, fake["detailed"].skin
                base_f = baselines(texture[i], fake["detailed"])
                preds = {"renderer": (fake["image"], flat["image"]), **{k: (base_f[k], base_0[k]) for k in base_f}}
                for name, (pf, p0) in preds.items():
                    _collect(stores["fidelity", g], name,
                             corr=M.detail_fidelity(pf, shade, shade0, skin, s["highpass_sigma"]))
                    _collect(stores["response", g], name, corr=M.detail_response(pf, p0, shade, shade0, skin))
                    _collect(stores["strength", g], name, slope=M.detail_strength(pf, p0, shade, shade0, skin))
        for k, store in stores.items():
            fig = "slope" if k[0] == "strength" else "corr"
            detail[k][key] = {m: v[fig] for m, v in _summaries(store, n_boot, seed).items()}
    fidelity, response, strength = detail["fidelity", gain], detail["response", 1.0], detail["strength", gain]

    tables = {"rerender": _summaries(rer, n_boot, seed), "new_expression": _summaries(newx, n_boot, seed),
              "detail_fidelity": fidelity, "detail_response": response, "detail_strength": strength,
              "detail_fidelity_gain1": detail["fidelity", 1.0], "detail_response_gain": detail["response", gain],
              "detail_strength_gain1": detail["strength", 1.0]}
    mine = lambda table, fig: table["renderer"][fig]["mean"]  # noqa: E731
    by_yaw = lambda table: {yaw: v["renderer"]["mean"] for yaw, v in table.items()}  # noqa: E731
    return {
        "n_images": len(test), "n_identities": int(len(set(test.identity))), "n_pairs": int(len(src)),
        # R's own figures (means over the held-out images / pairs); "methods" has every method's with intervals.
        "psnr": mine(tables["rerender"], "psnr"), "ssim": mine(tables["rerender"], "ssim"),
        "new_expression": {k: mine(tables["new_expression"], k) for k in ("psnr", "ssim", "facenet_distance")},
        "detail_fidelity": _mean(by_yaw(fidelity).values()), "detail_fidelity_by_yaw": by_yaw(fidelity),
        "detail_response": _mean(by_yaw(response).values()), "detail_response_by_yaw": by_yaw(response),
        "detail_strength": _mean(by_yaw(strength).values()), "detail_strength_by_yaw": by_yaw(strength),
        "methods": tables,
        "fidelity_gain": gain, "highpass_sigma_px": s["highpass_sigma"], "bootstrap": n_boot,
    }


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return round(float(np.mean(v)), 4) if v else None
