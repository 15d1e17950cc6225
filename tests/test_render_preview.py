"""The template face rendered under several lights and poses, with and without wrinkles.

Writes ``results/test-artifacts/template_preview.png`` (or $FACEDET3D_TEST_ARTIFACTS) for
people to look at, and checks what can be checked: the face fills a sensible part of the
image, light moves the shading, and the wrinkle map shows up in the render where its AUs are.
"""

from __future__ import annotations

import numpy as np
import torch

from facedet3d.data.grids import image_grid, save_png
from facedet3d.face import layout
from facedet3d.face.expressions import expression_aus
from facedet3d.face.synthetic import synthetic_model
from facedet3d.face.wrinkles import WrinkleBank, au_region_mask, sample_identity_details
from facedet3d.render.camera import face_camera
from facedet3d.render.displace import displace
from facedet3d.render.shaded import render_shaded
from facedet3d.render.shading import sh_from_light
from tests.conftest import artifact_dir

POSES = [(0.0, 0.0, 0.0), (np.deg2rad(-30), 0.0, 0.0), (np.deg2rad(30), np.deg2rad(-8), 0.0)]
LIGHTS = [(0.3, 0.4, 1.0), (-0.9, 0.2, 0.6), (0.0, 1.0, 0.4)]


def _render(verts, faces, pose, light) -> np.ndarray:
    sh = sh_from_light(light, intensity=0.7, ambient=0.35).float()
    out = render_shaded(verts, faces, face_camera(256), torch.tensor(pose), sh=sh, background=1.0)
    return out.image[0].permute(1, 2, 0).numpy(), out.mask[0, 0].numpy()


def test_template_preview_png_shows_a_face_and_its_wrinkles():
    model = synthetic_model(256)
    faces = torch.as_tensor(model.faces)
    uvs = torch.as_tensor(model.uvs)
    aus = expression_aus("surprise", 4.5) + expression_aus("anger", 4.0)
    aus = np.clip(aus, 0, 5).astype(np.float32)
    verts = model.vertices(expr=torch.as_tensor(aus)[None])
    bank = WrinkleBank(sample_identity_details(np.random.default_rng(3)), 1024)
    detail = torch.as_tensor(bank.detail_map(aus, age=68.0))[None, None]
    detailed = displace(verts, faces, uvs, detail)

    rows, labels = [], []
    for name, mesh in (("no details", verts), ("wrinkle map", detailed)):
        row = []
        for pose in POSES:
            for light in LIGHTS[:2] if pose != POSES[0] else LIGHTS:
                image, mask = _render(mesh, faces, pose, light)
                row.append(image)
                assert 0.25 < mask.mean() < 0.8, "the face should fill a sensible part of the frame"
        rows.append(row)
        labels.append(name)
    path = save_png(artifact_dir() / "template_preview.png", image_grid(rows, 256, row_labels=labels))
    assert path.stat().st_size > 50_000

    # Light from the image's left brightens the face's left half, and vice versa.
    def halves(img, mask):
        g = img.mean(-1)
        return g[:, :128][mask[:, :128] > 0].mean(), g[:, 128:][mask[:, 128:] > 0].mean()
    lit_left = halves(*_render(verts, faces, POSES[0], (-0.9, 0.0, 0.5)))
    lit_right = halves(*_render(verts, faces, POSES[0], (0.9, 0.0, 0.5)))
    assert lit_left[0] > lit_left[1] + 0.05 and lit_right[1] > lit_right[0] + 0.05

    # The wrinkles are visible where AU1/AU2/AU4 put them: more fine-scale contrast on the forehead.
    plain, _ = _render(verts, faces, POSES[0], LIGHTS[2])
    wrinkled, _ = _render(detailed, faces, POSES[0], LIGHTS[2])
    forehead = au_region_mask("AU01", 256) & layout.face_mask_uv(256, margin=10)
    rows_cols = np.nonzero(forehead)
    def fine(img):  # frontal render: image pixels line up closely with the UV square
        g = img.mean(-1)
        return np.abs(g - (np.roll(g, 1, 0) + np.roll(g, -1, 0)) / 2)[rows_cols].mean()
    assert fine(wrinkled) > 1.5 * fine(plain)
