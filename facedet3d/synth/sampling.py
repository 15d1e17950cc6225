"""What the synthetic generator draws: identities (shape, albedo, age, wrinkles) and shots.

Every draw derives from ``(seed, identity index)`` only, so a chunk of identities
renders the same bytes whichever job renders it, and identities never depend on
how many others are in the dataset — except their split, which is a seeded
permutation of all identity indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facedet3d.face.expressions import sample_expression, video_sequence
from facedet3d.face.wrinkles import WrinkleIdentity, sample_identity_details

@dataclass(frozen=True)
class Identity:
    """One synthetic person."""

    index: int
    name: str
    split: str
    age: float
    shape: np.ndarray  # (Ks,) in units of the shape std
    albedo: np.ndarray  # (Ka,) in units of the albedo std
    wrinkles: WrinkleIdentity


@dataclass(frozen=True)
class Shot:
    """One image of an identity: expression, head pose, camera distance, light, background."""

    id: str
    kind: str  # "image" or "video"
    sequence: str  # video id ("" for still images)
    frame: int  # frame index in the video (-1 for still images)
    expression: str
    aus: np.ndarray  # (17,) AU intensities in layout.AU_NAMES order, 0..5
    pose: np.ndarray  # (3,) yaw, pitch, roll in radians
    distance: float  # mm from the camera
    offset: np.ndarray  # (2,) image-plane shift of the face in mm
    light: np.ndarray  # (7,) ambient, intensity, light direction (x, y, z), warmth, unused
    background: np.ndarray  # (2, 3) top and bottom background colours, linear RGB


def assign_splits(n: int, fractions: dict, seed: int) -> list[str]:
    """Split label of each identity index: a seeded permutation cut by the fractions."""
    n_test = max(1, round(fractions["test"] * n))
    n_val = round(fractions["val"] * n)
    order = np.random.default_rng([seed, 7]).permutation(n)
    labels = np.empty(n, dtype=object)
    labels[order[:n_test]] = "test"
    labels[order[n_test:n_test + n_val]] = "val"
    labels[order[n_test + n_val:]] = "train"
    return list(labels)


def identity_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 11, index])


def sample_identity(index: int, split: str, seed: int, n_shape: int, n_albedo: int,
                    age_range: tuple[float, float], rng: np.random.Generator) -> Identity:
    """Draw one person: shape and albedo coefficients ~ N(0, 1), clipped at ±2.5 std, an age."""
    shape = np.clip(rng.standard_normal(n_shape), -2.5, 2.5).astype(np.float32)
    albedo = np.clip(rng.standard_normal(n_albedo), -2.5, 2.5).astype(np.float32)
    age = float(rng.uniform(*age_range))
    wrinkles = sample_identity_details(rng)
    return Identity(index, f"s{index:05d}", split, age, shape, albedo, wrinkles)


def _scene(rng: np.random.Generator, max_yaw_deg: float) -> dict:
    yaw = np.deg2rad(rng.uniform(-max_yaw_deg, max_yaw_deg))
    pitch = np.deg2rad(rng.uniform(-10.0, 10.0))
    roll = np.deg2rad(rng.uniform(-6.0, 6.0))
    direction = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-0.3, 1.0), rng.uniform(0.6, 1.3)])
    direction /= np.linalg.norm(direction)
    light = np.array([rng.uniform(0.35, 0.6), rng.uniform(0.5, 0.9), *direction, rng.uniform(-1, 1), 0.0])
    top = rng.uniform(0.05, 0.8, 3)
    bottom = np.clip(top * rng.uniform(0.4, 1.2, 3), 0.0, 1.0)
    return dict(
        pose=np.array([yaw, pitch, roll], dtype=np.float32),
        distance=float(rng.uniform(560.0, 660.0)),
        offset=rng.uniform(-6.0, 6.0, 2).astype(np.float32),
        light=light.astype(np.float32),
        background=np.stack([top, bottom]).astype(np.float32),
    )


def sample_shots(identity: Identity, n_images: int, n_videos: int, n_frames: int,
                 max_yaw_deg: float, rng: np.random.Generator) -> list[Shot]:
    """Still images with random expressions, then videos neutral → apex (fixed camera and light)."""
    shots = []
    for k in range(n_images):
        name, aus = sample_expression(rng)
        shots.append(Shot(f"{identity.name}_e{k}", "image", "", -1, name, aus.astype(np.float32),
                          **_scene(rng, max_yaw_deg)))
    for j in range(n_videos):
        name, apex = sample_expression(rng, p_neutral=0.0)
        scene = _scene(rng, max_yaw_deg * 0.5)
        sequence = f"{identity.name}_v{j}"
        for t, aus in enumerate(video_sequence(apex, n_frames)):
            shots.append(Shot(f"{sequence}_f{t}", "video", sequence, t, name, aus.astype(np.float32), **scene))
    return shots
