"""Photograph a synthetic person again: the same person, camera, light and background, another
expression or head pose — the ground truth of an expression change the paper never had.

The person and their shots are re-drawn from the seed exactly as the `synth` stage drew them
(:func:`facedet3d.synth.sampling.sample_identity` and ``sample_shots`` on the identity's own
random stream), so a retake of a shot with its own AUs reproduces the stored image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from facedet3d.errors import UserError
from facedet3d.synth import sampling


class Retaker:
    """Re-renders the shots of one synthetic run (config of that run)."""

    def __init__(self, config: dict):
        from facedet3d.synth.render import SynthRenderer

        self.s, self.seed = config["synth"], int(config["seed"])
        self.renderer = SynthRenderer(self.s["mesh_resolution"], self.s["image_size"], self.s["texture_size"])
        self.splits = sampling.assign_splits(self.s["n_identities"], self.s["split"], self.seed)
        self._people: dict[int, tuple] = {}

    def _person(self, index: int):
        from facedet3d.face.wrinkles import WrinkleBank

        if index not in self._people:
            s = self.s
            rng = sampling.identity_rng(self.seed, index)
            person = sampling.sample_identity(index, self.splits[index], self.seed, self.renderer.n_shape,
                                              self.renderer.n_albedo, tuple(s["age_range"]), rng)
            shots = sampling.sample_shots(person, s["expressions_per_identity"], s["videos_per_identity"],
                                          s["video_frames"], s["max_yaw_deg"], rng)
            self._people[index] = (person, {shot.id: shot for shot in shots}, WrinkleBank(person.wrinkles, s["detail_size"]),
                                   self.renderer.texture(person.albedo))
        return self._people[index]

    def retake(self, image_id: str, aus: np.ndarray | None = None, yaw: float | None = None) -> np.ndarray:
        """The (H, W, 3) uint8 photo of shot ``image_id`` (e.g. ``s00003_e0``) with AUs ``aus`` and
        head yaw ``yaw`` (radians) replaced (None: the shot's own)."""
        try:
            index = int(image_id.split("_")[0][1:])
        except ValueError:
            raise UserError(f"{image_id!r} is not a synthetic image id") from None
        if not 0 <= index < self.s["n_identities"]:
            raise UserError(f"{image_id!r} is not an identity of this synthetic run")
        person, shots, bank, texture = self._person(index)
        if image_id not in shots:
            raise UserError(f"{image_id!r} is not a shot of this synthetic run")
        shot = shots[image_id]
        if aus is not None:
            shot = dataclasses.replace(shot, aus=np.asarray(aus, np.float32))
        if yaw is not None:
            shot = dataclasses.replace(shot, pose=np.array([yaw, *shot.pose[1:]], np.float32))
        return self.renderer.render(person, shot, bank.detail_map(shot.aus, person.age), texture).image
