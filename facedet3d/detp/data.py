"""DetP's data: one split of the DetP shards in memory at DetP's size, same-person pairs, batches.

The demo's splits are small (a few hundred 256² maps); they are read once, area-downsampled to
``size`` and kept as tensors. (Streaming shards at FFHQ scale is the loaders' job, not this one's.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facedet3d.data.uvmaps import area_downsample
from facedet3d.errors import UserError
from facedet3d.shards.loaders import DetPDataset, PersonPairs

VECTOR_FIELDS = ("aus", "expr", "shape", "facenet")


@dataclass
class Split(PersonPairs):
    """Every sample of one split: maps (N, 1, S, S) in mm (float32) and the conditioning vectors."""

    detail: torch.Tensor      # D(I), extracted, mm
    truth: torch.Tensor | None  # the generator's true D(I), mm (synthetic data only)
    aus: torch.Tensor         # (N, 17) annotated AUs
    expr: torch.Tensor        # (N, E) fitted expression parameters α_e
    shape: torch.Tensor       # (N, K) α_s
    facenet: torch.Tensor     # (N, 512)
    age: torch.Tensor         # (N, 82) age distribution + expected age / 100
    identity: np.ndarray      # (N,) str
    ids: np.ndarray           # (N,) str
    kind: np.ndarray
    sequence: np.ndarray
    frame: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def conditioning(self, index) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k)[index] for k in ("aus", "expr", "shape", "facenet", "age")}


def _resize(maps: np.ndarray, size: int) -> torch.Tensor:
    """(N, M, M) mm -> (N, 1, size, size) float32 (area average)."""
    x = torch.from_numpy(np.asarray(maps, np.float32))[:, None]
    return area_downsample(x, size, "train_detp.size", "the shards' detp_size")


def load_split(index_path, split: str, size: int) -> Split:
    """Read one split of the DetP shards (``index_path``) at ``size``²."""
    ds = DetPDataset(index_path, split)
    try:
        fields = set(ds.fields)
        missing = [k for k in ("detail", *VECTOR_FIELDS, "age_dist", "age", "identity") if k not in fields]
        if missing:
            raise UserError(f"the DetP shards of {index_path} lack {', '.join(missing)}; rebuild them with "
                            "`facedet3d shards` after `annotate`")
        age = np.concatenate([ds.read("age_dist"), ds.read("age")[:, None] / 100.0], axis=1)
        return Split(
            detail=_resize(ds.read("detail"), size),
            truth=_resize(ds.read("gt_detail"), size) if "gt_detail" in fields else None,
            age=torch.from_numpy(age.astype(np.float32)),
            identity=ds.read("identity"), ids=ds.read("id"), kind=ds.read("kind"),
            sequence=ds.read("sequence"), frame=ds.read("frame"),
            **{k: torch.from_numpy(ds.read(k).astype(np.float32)) for k in VECTOR_FIELDS},
        )
    finally:
        ds.close()


def make_batch_fn(train: Split, batch: int, seed: int, scale: float):
    """``batch_fn(step)`` for the training loop: a pure function of the step.

    Each batch holds ``batch`` sources; each source has a partner of the same person in another
    expression (Eq. 18's pairs: its target AUs y, α_e and its map D(I_y)) and a random target
    expression (y, α̂_e) of any training image (the adversarial part). Maps are in network units
    (mm / scale).
    """
    pairs = train.sampler(seed, require="DetP has no pairs to learn from")

    def batch_fn(step: int) -> dict:
        rng = np.random.default_rng([seed, 0xDE7, step])
        src, tgt = pairs.draw(rng, batch)
        rnd = rng.integers(0, len(train), size=batch)
        out = {f"src_{k}": v for k, v in train.conditioning(src).items()}
        out |= {"src_detail": train.detail[src] / scale, "pair_detail": train.detail[tgt] / scale,
                "pair_aus": train.aus[tgt], "pair_expr": train.expr[tgt],
                "rand_aus": train.aus[rnd], "rand_expr": train.expr[rnd]}
        return out

    return batch_fn
