"""The morphable-model interface shared by the synthetic model and the BFM2017 loader.

A model is a mean mesh plus linear shape, expression and albedo bases:

    vertices = mean + Σ_k shape_k · shape_std_k · shape_basis_k + Σ_k expr_k · expr_std_k · expr_basis_k
    albedo   = clamp(albedo_mean + Σ_k albedo_k · albedo_std_k · albedo_basis_k, 0, 1)

so coefficients are in units of standard deviations (a standard normal draw is a plausible
sample). No normalisation of the bases is assumed. BFM2017 stores unit-norm basis columns with
``std = sqrt(pcaVariance)``; the synthetic model does the same for shape and albedo, while its
expression basis is millimetres per unit Action-Unit intensity with ``expr_std = 1`` (so an
expression coefficient *is* the AU intensity, 0..5).

Arrays are stored as numpy (float32); the evaluation methods are torch, differentiable with
respect to the coefficients, and follow the coefficients' device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(eq=False)
class MorphableModel:
    mean: np.ndarray  # (V, 3) mm, frontal frame (x right, y up, z towards the camera)
    shape_basis: np.ndarray  # (Ks, V, 3)
    shape_std: np.ndarray  # (Ks,)
    expr_basis: np.ndarray  # (Ke, V, 3)
    expr_std: np.ndarray  # (Ke,)
    albedo_mean: np.ndarray  # (V, 3) linear RGB in [0, 1]
    albedo_basis: np.ndarray  # (Ka, V, 3)
    albedo_std: np.ndarray  # (Ka,)
    faces: np.ndarray  # (F, 3) int64, counter-clockwise seen from the front
    uvs: np.ndarray  # (V, 2) in [0, 1], layout's UV square
    landmarks: np.ndarray | None = None  # (68,) int64 vertex indices (iBUG 300-W order)
    expr_names: list[str] = field(default_factory=list)  # one name per expression component
    name: str = "model"  # e.g. "synthetic", "bfm2017"

    def __post_init__(self) -> None:
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        self.mean = f32(self.mean)
        self.shape_basis = f32(self.shape_basis)
        self.shape_std = f32(self.shape_std)
        self.expr_basis = f32(self.expr_basis)
        self.expr_std = f32(self.expr_std)
        self.albedo_mean = f32(self.albedo_mean)
        self.albedo_basis = f32(self.albedo_basis)
        self.albedo_std = f32(self.albedo_std)
        self.uvs = f32(self.uvs)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64)
        if self.landmarks is not None:
            self.landmarks = np.ascontiguousarray(self.landmarks, dtype=np.int64)
        self.expr_names = list(self.expr_names)
        V = self.mean.shape[0]
        for label, basis, std in (
            ("shape", self.shape_basis, self.shape_std),
            ("expr", self.expr_basis, self.expr_std),
            ("albedo", self.albedo_basis, self.albedo_std),
        ):
            if basis.ndim != 3 or basis.shape[1:] != (V, 3) or std.shape != (basis.shape[0],):
                raise ValueError(f"{label} basis {basis.shape} / std {std.shape} do not match {V} vertices")
        if self.albedo_mean.shape != (V, 3) or self.uvs.shape != (V, 2):
            raise ValueError("albedo_mean must be (V, 3) and uvs (V, 2)")
        if self.expr_names and len(self.expr_names) != self.num_expr:
            raise ValueError(f"{len(self.expr_names)} expr_names for {self.num_expr} expression components")
        self._torch_cache: dict = {}

    # -- sizes
    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shape_basis.shape[0])

    @property
    def num_expr(self) -> int:
        return int(self.expr_basis.shape[0])

    @property
    def num_albedo(self) -> int:
        return int(self.albedo_basis.shape[0])

    # -- torch evaluation
    def _t(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A model array as a torch tensor on ``like``'s device and dtype (cached)."""
        key = (name, like.device, like.dtype)
        if key not in self._torch_cache:
            self._torch_cache[key] = torch.as_tensor(getattr(self, name)).to(device=like.device, dtype=like.dtype)
        return self._torch_cache[key]

    @staticmethod
    def _combine(mean: torch.Tensor, basis: torch.Tensor, std: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        if coef.ndim != 2 or coef.shape[1] != basis.shape[0]:
            raise ValueError(f"coefficients must be (B, {basis.shape[0]}), got {tuple(coef.shape)}")
        offset = (coef * std) @ basis.reshape(basis.shape[0], -1)  # (B, V*3)
        return mean.unsqueeze(0) + offset.reshape(coef.shape[0], -1, 3)

    def vertices(self, shape: torch.Tensor | None = None, expr: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices (B, V, 3) in mm for shape (B, Ks) and expression (B, Ke) coefficients
        (either may be None, meaning zeros)."""
        like = shape if shape is not None else expr
        if like is None:
            raise ValueError("give at least one of shape / expr coefficients")
        B = like.shape[0]
        if shape is None:
            shape = like.new_zeros(B, self.num_shape)
        if expr is None:
            expr = like.new_zeros(B, self.num_expr)
        v = self._combine(self._t("mean", like), self._t("shape_basis", like), self._t("shape_std", like), shape)
        de = (expr * self._t("expr_std", like)) @ self._t("expr_basis", like).reshape(self.num_expr, -1)
        return v + de.reshape(B, -1, 3)

    def albedo(self, coef: torch.Tensor) -> torch.Tensor:
        """Per-vertex linear-RGB albedo (B, V, 3) in [0, 1] for coefficients (B, Ka)."""
        a = self._combine(self._t("albedo_mean", coef), self._t("albedo_basis", coef), self._t("albedo_std", coef), coef)
        return a.clamp(0.0, 1.0)

    def landmarks_3d(self, verts: torch.Tensor) -> torch.Tensor:
        """The 68 landmark positions (B, 68, 3) of vertices (B, V, 3)."""
        if self.landmarks is None:
            raise ValueError(f"model {self.name!r} has no landmark indices")
        idx = torch.as_tensor(self.landmarks, device=verts.device)
        return verts.index_select(-2, idx)

    def faces_torch(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.as_tensor(self.faces, device=device)
