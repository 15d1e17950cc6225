"""Head pose, rigid transforms and pinhole / orthographic cameras.

Frames
------
* Frontal frame (the face layout, :mod:`facedet3d.face.layout`): millimetres,
  x to the image's right (the subject's left), y up, z towards the camera.
* Camera space is OpenGL-like: the camera sits at the origin looking down -z,
  x right, y up. A frontal-frame face with identity pose is therefore seen
  exactly as in the layout's UV square (upright, subject's right on image left).
* Screen space, as returned by :meth:`Camera.project`: ``(x, y, depth)`` with
  x the pixel column, y the pixel row (0 at the top edge; the centre of pixel
  ``(row i, col j)`` is ``(j + 0.5, i + 0.5)``), and ``depth = -z_cam`` in mm,
  positive in front of the camera, smaller = closer.

Pose angles (radians), all right-handed rotations about the frontal axes:
* yaw about +y: positive yaw turns the nose towards +x, i.e. the face turns to
  the subject's left, towards the image's right;
* pitch about +x: positive pitch turns the nose towards -y (the face looks down);
* roll about +z: positive roll turns the top of the head towards -x, i.e. a
  counter-clockwise in-plane rotation as seen in the image.
The rotation is ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` acting on column vectors
(pitch applied first, as in Deep3DFaceRecon).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import Tensor

from facedet3d.face import layout

Scalar = Union[float, Tensor]

# Default face-to-camera distance (mm) and the frontal point that pose rotates about
# and that lands on the optical axis: the centre of the layout's UV window.
DEFAULT_DISTANCE = 600.0
FACE_PIVOT = (0.5 * (layout.X_MIN + layout.X_MAX), 0.5 * (layout.Y_MIN + layout.Y_MAX), 0.0)


def rotation_matrix(yaw: Scalar, pitch: Scalar, roll: Scalar) -> Tensor:
    """Rotation ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (..., 3, 3) from angles in radians.

    The angles are floats or tensors broadcastable to a common shape ``(...)``.
    See the module docstring for the axes and signs.
    """
    ref = next((a for a in (yaw, pitch, roll) if isinstance(a, Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    yaw, pitch, roll = torch.broadcast_tensors(
        *(torch.as_tensor(a, dtype=dtype, device=device) for a in (yaw, pitch, roll))
    )
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1)
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1)
    shape = yaw.shape + (3, 3)
    return rz.reshape(shape) @ ry.reshape(shape) @ rx.reshape(shape)


def rigid_transform(points: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
    """Apply ``p -> R p + t`` to points (B|1, V, 3) with R (B|1, 3, 3) or (3, 3), t (B|1, 3) or (3,) -> (B, V, 3)."""
    if rotation.dim() == 2:
        rotation = rotation[None]
    if translation.dim() == 1:
        translation = translation[None]
    return points @ rotation.transpose(-1, -2) + translation[:, None, :]


def _pose_angles(pose, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(yaw, pitch, roll) each (B',) from a 3-sequence, a (3,) or a (B, 3) tensor."""
    if isinstance(pose, Tensor):
        p = pose.to(dtype=like.dtype, device=like.device)
    else:  # a 3-sequence of floats and / or (B,) tensors (kept differentiable)
        parts = torch.broadcast_tensors(*(torch.as_tensor(a, dtype=like.dtype, device=like.device) for a in pose))
        p = torch.stack(parts, -1)
    p = p.reshape(-1, 3)
    return p[:, 0], p[:, 1], p[:, 2]


def face_pose(
    pose=(0.0, 0.0, 0.0),
    distance: Scalar = DEFAULT_DISTANCE,
    pivot: Sequence[float] = FACE_PIVOT,
    translation=None,
    like: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Rigid transform (R (B, 3, 3), t (B, 3)) taking frontal-frame mm to camera space.

    ``p_cam = R (p - pivot) + (0, 0, -distance) + translation``: the face is
    rotated by ``pose = (yaw, pitch, roll)`` (radians; a 3-sequence, (3,) or
    (B, 3) tensor) about ``pivot`` (frontal mm), which is then placed ``distance``
    mm in front of the camera on the optical axis, plus an optional extra
    camera-space ``translation`` (3,) or (B, 3) in mm. ``distance`` may be a
    float or a (B,) tensor.
    """
    like = like if like is not None else torch.zeros((), dtype=torch.get_default_dtype())
    yaw, pitch, roll = _pose_angles(pose, like)
    rot = rotation_matrix(yaw, pitch, roll)  # (B', 3, 3)
    piv = torch.as_tensor(pivot, dtype=like.dtype, device=like.device)
    d = torch.as_tensor(distance, dtype=like.dtype, device=like.device).reshape(-1)
    t = -(rot @ piv)  # (B', 3)
    offset = torch.zeros(d.shape[0], 3, dtype=like.dtype, device=like.device)
    offset[:, 2] = -d
    t = t + offset
    if translation is not None:
        t = t + torch.as_tensor(translation, dtype=like.dtype, device=like.device).reshape(-1, 3)
    return rot, t


def place_face(
    verts: Tensor,
    pose=(0.0, 0.0, 0.0),
    distance: Scalar = DEFAULT_DISTANCE,
    pivot: Sequence[float] = FACE_PIVOT,
    translation=None,
) -> Tensor:
    """Frontal-frame vertices (B, V, 3) or (V, 3), mm -> camera-space vertices (B, V, 3).

    See :func:`face_pose` for the arguments; the batch is broadcast between the
    vertices and the pose / distance.
    """
    if verts.dim() == 2:
        verts = verts[None]
    rot, t = face_pose(pose, distance, pivot, translation, like=verts)
    return rigid_transform(verts, rot, t)  # broadcasts batches of 1


@dataclass(frozen=True)
class Camera:
    """A pinhole ("perspective") or orthographic camera at the origin looking down -z.

    Attributes:
        kind: "perspective" or "orthographic".
        image_size: (H, W) in pixels.
        focal: focal length in pixels (perspective) or the scale in pixels per mm
            (orthographic); a float or a (B,) tensor.
        principal: principal point (cx, cy) in pixels (column, row), or a (B, 2) tensor of
            one per image (cameras of crops); None means the image centre (W / 2, H / 2).
    """

    kind: str
    image_size: tuple[int, int]
    focal: Scalar
    principal: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("perspective", "orthographic"):
            raise ValueError(f"camera kind must be 'perspective' or 'orthographic', got {self.kind!r}")
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    @classmethod
    def perspective(cls, image_size: tuple[int, int], focal: Scalar, principal=None) -> "Camera":
        """A pinhole camera with ``focal`` in pixels."""
        return cls("perspective", image_size, focal, principal)

    @classmethod
    def orthographic(cls, image_size: tuple[int, int], scale: Scalar, principal=None) -> "Camera":
        """An orthographic camera with ``scale`` pixels per mm."""
        return cls("orthographic", image_size, scale, principal)

    @property
    def is_perspective(self) -> bool:
        """True for a pinhole camera (rasterize with ``perspective_correct=True``)."""
        return self.kind == "perspective"

    @property
    def center(self) -> tuple[float, float]:
        """Principal point (cx, cy) in pixels."""
        if self.principal is not None:
            return float(self.principal[0]), float(self.principal[1])
        h, w = self.image_size
        return w / 2.0, h / 2.0

    def project(self, verts_cam: Tensor) -> Tensor:
        """Camera-space points (B, V, 3) -> screen (B, V, 3) = (column, row, depth = -z).

        Differentiable w.r.t. the points (and a tensor focal). Perspective points
        must lie in front of the camera (z < 0).
        """
        f = torch.as_tensor(self.focal, dtype=verts_cam.dtype, device=verts_cam.device)
        if f.dim() == 1:
            f = f[:, None]
        if isinstance(self.principal, Tensor):
            c = self.principal.to(verts_cam)
            cx, cy = c[:, 0:1], c[:, 1:2]
        else:
            cx, cy = self.center
        x, y, z = verts_cam.unbind(-1)
        depth = -z
        if self.is_perspective:
            col = cx + f * x / depth
            row = cy - f * y / depth
        else:
            col = cx + f * x
            row = cy - f * y
        return torch.stack([col, row, depth], dim=-1)


def face_camera(
    image_size: tuple[int, int] | int,
    kind: str = "perspective",
    distance: float = DEFAULT_DISTANCE,
    field_mm: float = layout.SPAN,
) -> Camera:
    """A camera framing a face placed with :func:`place_face` at ``distance`` mm.

    ``field_mm`` millimetres at the face's pivot depth (default: the layout's
    200 mm UV window) span the shorter image side.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    side = float(min(image_size))
    if kind == "perspective":
        return Camera.perspective(image_size, side * distance / field_mm)
    return Camera.orthographic(image_size, side / field_mm)
