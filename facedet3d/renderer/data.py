"""The renderer's data: one split of the shards joined with its photos, face crops, batches.

R renders a face crop: per image, the fitted proxy geometry G_P is projected with the photo's
camera, and the square around it (``CROP_MARGIN`` added) is cut from the photo and resized to the
renderer's ``size``². The crop's camera (focal and principal point scaled and shifted) is what
every rasterization of that image uses, so a render and its photo line up pixel for pixel.

A split's small per-image vectors (fitted parameters, crop camera, crop box, identity) are read
once and held in memory. Its maps and crops need not be: ``load_faces(..., stream=True)`` (what
``train_renderer`` does with its training split) leaves them where they are and reads them on
indexing, ``faces.image[idx]`` decoding and cutting the batch's photos (:class:`PhotoCrops`),
``faces.texture[idx]`` / ``faces.detail[idx]`` reading the batch's rows from the DetP shards
(sorted, :class:`ShardTextures`, :class:`~facedet3d.detp.data.ShardMaps`), so memory does not grow
with the split's maps (FFHQ: 70k photos). They give exactly the tensors the split in memory has.
The held-out split (test) is loaded into memory: evaluation and the samples index it whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facedet3d.data.images import load_image, photo_hw
from facedet3d.data.manifest import read_manifest, resolve_path
from facedet3d.data.uvmaps import area_downsample
from facedet3d.detp.data import ShardMaps
from facedet3d.errors import UserError
from facedet3d.paths import Results
from facedet3d.render.camera import Camera, place_face
from facedet3d.renderer.geometry import FaceGeometry, View
from facedet3d.shards.loaders import DetPDataset, LazyRows, PersonPairs
from facedet3d.train.distributed import SINGLE, World, rank_rows

CROP_MARGIN = 0.08  # added on every side of the projected mesh's bounding square
_MAPS = ("texture", "texture_mask", "detail")
_FIELDS = (*_MAPS, "shape", "expr", "albedo", "pose", "translation", "focal", "sh", "aus", "identity", "id", "kind")
VECTORS = ("shape", "expr", "albedo", "pose", "translation", "focal", "principal", "sh", "aus")


class PhotoCrops(LazyRows):
    """A split's face crops, cut from the photos on indexing: ``crops[idx]`` (N..., 3, size, size)
    uint8, each photo decoded (:func:`load_image`) and cut to its ``box`` (:func:`cut`) as the
    split in memory does."""

    def __init__(self, photos: list[str], boxes: np.ndarray, size: int):
        super().__init__(len(photos), (3, size, size))
        self.photos, self.boxes, self.size = photos, np.asarray(boxes, np.int64).reshape(-1, 3), int(size)

    def rows(self, unique: np.ndarray) -> torch.Tensor:
        out = np.empty((len(unique), self.size, self.size, 3), np.uint8)
        for j, i in enumerate(unique.tolist()):
            out[j] = cut(load_image(self.photos[i]).rgb, tuple(int(v) for v in self.boxes[i]), self.size)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class ShardTextures(LazyRows):
    """A split's texture maps left in the DetP shards: ``textures[idx]`` (N..., 4, size, size) uint8,
    T(I_x) and its mask · 255 read per batch (:meth:`DetPDataset.read_rows`, sorted) and area-
    downsampled to ``size`` (:func:`_textures`, as the split in memory)."""

    def __init__(self, dataset: DetPDataset, size: int):
        super().__init__(len(dataset), (4, size, size))
        self.dataset, self.size = dataset, int(size)
        if len(dataset):
            self[0]  # a size that does not divide the shards' maps fails here, like the in-memory load

    def rows(self, unique: np.ndarray) -> torch.Tensor:
        return _textures(self.dataset.read_rows("texture", unique), self.dataset.read_rows("texture_mask", unique),
                         self.size)


@dataclass
class Faces(PersonPairs):
    """Every image of one split at the renderer's sizes.

    image (N, 3, S, S) uint8 sRGB crops; texture (N, 4, T, T) uint8 (T(I_x) and its mask · 255);
    detail (N, 1, M, M) float32 extracted D(I_x) in mm (M: the shards' detp_size): tensors, or
    for a streamed split objects indexed like them (:class:`PhotoCrops`, :class:`ShardTextures`,
    :class:`~facedet3d.detp.data.ShardMaps`: ``faces.image[idx]`` with integer indices); the
    fitted vectors shape, expr, albedo (γ), pose, translation, sh (l), aus (x), and the crop camera
    (focal (N,), principal (N, 2)); identity, ids, kind (N,) str.
    """

    image: torch.Tensor | PhotoCrops
    texture: torch.Tensor | ShardTextures
    detail: torch.Tensor | ShardMaps
    shape: torch.Tensor
    expr: torch.Tensor
    albedo: torch.Tensor
    pose: torch.Tensor
    translation: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor
    sh: torch.Tensor
    aus: torch.Tensor
    identity: np.ndarray
    ids: np.ndarray
    kind: np.ndarray
    size: int

    def __len__(self) -> int:
        return len(self.ids)

    def view(self, index) -> View:
        """The camera and light of images ``index`` (their crop cameras)."""
        return View(self.size, self.pose[index], self.translation[index], self.focal[index],
                    self.principal[index], self.sh[index])



def crop_box(geometry: FaceGeometry, shape, expr, pose, translation, focal: float, image_hw) -> tuple[int, int, int]:
    """(x0, y0, side) px: the square around the projected proxy mesh, ``CROP_MARGIN`` added."""
    h, w = image_hw
    verts = geometry.vertices(shape[None], expr[None])
    cam = Camera.perspective((h, w), float(focal))
    screen = cam.project(place_face(verts, pose[None], 0.0, translation=translation[None]))[0, :, :2]
    lo, hi = screen.min(0).values, screen.max(0).values
    side = float((hi - lo).max()) * (1.0 + 2.0 * CROP_MARGIN)
    centre = (lo + hi) / 2.0
    side_px = max(8, int(round(side)))
    x0, y0 = int(round(float(centre[0]) - side_px / 2)), int(round(float(centre[1]) - side_px / 2))
    return x0, y0, side_px


def cut(image: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    """The square ``box`` (x0, y0, side) of an (H, W, 3) uint8 image, black outside, resized to size²."""
    x0, y0, side = box
    h, w = image.shape[:2]
    out = np.zeros((side, side, 3), np.uint8)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + side), min(w, x0 + side)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = image[ys:ye, xs:xe]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


def crop_camera(focal: float, image_hw, box, size: int) -> tuple[float, tuple[float, float]]:
    """(focal, principal) of the crop camera: the photo's camera (principal point at its centre) cut to ``box``."""
    h, w = image_hw
    x0, y0, side = box
    k = size / side
    return focal * k, ((w / 2.0 - x0) * k, (h / 2.0 - y0) * k)


def _textures(texture: np.ndarray, mask: np.ndarray, size: int) -> torch.Tensor:
    """The shards' (N, T0, T0, 3) uint8 textures and (N, T0, T0) masks -> (N, 4, size, size) uint8 (area
    average, rounded)."""
    texture = np.concatenate([texture, mask[..., None].astype(np.uint8) * 255], -1)
    return area_downsample(torch.from_numpy(np.ascontiguousarray(texture.transpose(0, 3, 1, 2))), size,
                           "train_renderer.texture_size", "the shards' texture_size").round().to(torch.uint8)


def load_faces(paths: Results, split: str, geometry: FaceGeometry, size: int, texture_size: int,
               stream: bool = False) -> Faces:
    """One split of the DetP shards with each image's crop from the manifest's photo.

    ``stream``: the crops, textures and detail maps stay in the photos and the shards and are read on
    indexing (:class:`PhotoCrops`, :class:`ShardTextures`, :class:`~facedet3d.detp.data.ShardMaps`);
    only the vectors and crop boxes are held (each photo's size is read from its header where that
    gives load_image's exactly, :func:`photo_hw`). The same tensors either way."""
    ds = DetPDataset(paths.shard_index, split)
    try:
        missing = [k for k in _FIELDS if k not in ds.fields]
        if missing:
            raise UserError(f"the DetP shards of {paths.shard_index} lack {', '.join(missing)}; rebuild them with "
                            "`facedet3d shards`")
        cols = {k: ds.read(k) for k in _FIELDS if not (stream and k in _MAPS)}
        rows = {r["id"]: r for r in read_manifest(paths.manifest)}
        vec = {k: torch.from_numpy(np.asarray(cols[k], np.float32)) for k in
               ("shape", "expr", "albedo", "pose", "translation", "focal", "sh", "aus")}
        images, photos, boxes, focal, principal = [], [], [], [], []
        for i, image_id in enumerate(cols["id"]):
            row = rows.get(str(image_id))
            if row is None:
                raise UserError(f"image {image_id} of the shards is not in {paths.manifest}: the shards belong to "
                                "another run; rebuild them with `facedet3d shards`")
            path = resolve_path(paths.manifest.parent, row)
            if stream:
                hw = photo_hw(path)
            else:
                photo = load_image(path).rgb
                hw = photo.shape[:2]
            box = crop_box(geometry, vec["shape"][i], vec["expr"][i], vec["pose"][i], vec["translation"][i],
                           float(vec["focal"][i]), hw)
            if stream:
                photos.append(str(path))
                boxes.append(box)
            else:
                images.append(cut(photo, box, size))
            f, c = crop_camera(float(vec["focal"][i]), hw, box, size)
            focal.append(f)
            principal.append(c)
        del rows
        if stream:
            detail_side = ds.field("detail")[1][-1]  # the shards' detp_size
            maps = {"image": PhotoCrops(photos, np.array(boxes, np.int64).reshape(-1, 3), size),
                    "texture": ShardTextures(ds, texture_size), "detail": ShardMaps(ds, "detail", detail_side)}
        else:
            maps = {"image": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                    "texture": _textures(cols["texture"], cols["texture_mask"], texture_size),
                    "detail": torch.from_numpy(cols["detail"].astype(np.float32))[:, None]}
        faces = Faces(
            **maps, focal=torch.tensor(focal, dtype=torch.float32),
            principal=torch.tensor(principal, dtype=torch.float32),
            identity=cols["identity"], ids=cols["id"], kind=cols["kind"], size=size,
            **{k: vec[k] for k in ("shape", "expr", "albedo", "pose", "translation", "sh", "aus")},
        )
    except BaseException:
        ds.close()
        raise
    if not stream:  # everything was read; a streamed split keeps its files open
        ds.close()
    return faces


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]."""
    return images.float() / 255.0


def make_batch_fn(train: Faces, batch: int, seed: int):
    """``batch_fn(step, world)`` for the training loop, a pure function of the step.

    Each batch holds ``batch`` source images x; for each, a fake-wrinkle donor z (another person's
    extracted D(I_z), Eq. 28) and a partner y (the same person in another expression: the target
    expression of the adversarial and AU terms, Eq. 34–35, with its α_e and extracted D(I_y)).
    With a ``world`` (data-parallel), this process's rows of the step's batch.
    """
    pairs = train.sampler(seed, require="the renderer has no target expressions")

    def batch_fn(step: int, world: World = SINGLE) -> dict:
        rng = np.random.default_rng([seed, 0x4E7, step])
        x, y = pairs.draw(rng, batch)
        z = rng.integers(0, len(train), size=batch)
        same = train.identity[z] == train.identity[x]
        z[same] = (z[same] + len(train) // 2) % len(train)  # another person's details
        rows = rank_rows(batch, world)
        x, y, z = x[rows], y[rows], z[rows]
        out = {k: getattr(train, k)[x] for k in VECTORS}
        out |= {"image": as_float(train.image[x]), "texture": as_float(train.texture[x]), "detail": train.detail[x],
                "fake_detail": train.detail[z], "pair_detail": train.detail[y], "pair_expr": train.expr[y],
                "pair_aus": train.aus[y]}
        return out

    return batch_fn
