"""DetP's data: one split of the DetP shards at DetP's size, same-person pairs, batches.

The per-sample vectors of a split (AUs, α_e, α_s, FaceNet, age; identity and ids) are small and
held in memory. The maps are not: a training split is streamed (``load_split(..., stream=True)``,
what ``train_detp`` does), each batch reading its rows of D(I) from the shards and area-
downsampling them to ``size`` (:class:`ShardMaps`), so peak memory does not grow with the split
(FFHQ: 70k 256² maps). The held-out splits (test, val) are loaded into memory by default:
evaluation compares every ordered pair of a held-out person, so it holds maps per pair anyway.
A streamed split gives the same tensors as the same split in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from facedet3d.data.uvmaps import area_downsample
from facedet3d.detp.metrics import face_region
from facedet3d.errors import UserError
from facedet3d.shards.loaders import DetPDataset, LazyRows, PersonPairs
from facedet3d.train.distributed import SINGLE, World, rank_rows

VECTOR_FIELDS = ("aus", "expr", "shape", "facenet")
_BLOCK = 64  # maps per read when a streamed split is scanned whole (region and scale)


def _resize(maps: np.ndarray, size: int) -> torch.Tensor:
    """(N, M, M) mm -> (N, 1, size, size) float32 (area average). (float16 -> float32 is exact;
    torch converts it several times faster than numpy.)"""
    x = torch.from_numpy(np.asarray(maps)).float()[:, None]
    return area_downsample(x, size, "train_detp.size", "the shards' detp_size")


class ShardMaps(LazyRows):
    """One map field of a split (``detail`` or ``gt_detail``), left in the shards and read on
    indexing: ``maps[idx]`` is a float32 mm tensor (*idx.shape, 1, size, size), the values the
    split in memory has. The rows are read sorted per shard, each once, and area-downsampled to
    ``size``."""

    def __init__(self, dataset: DetPDataset, field: str, size: int):
        super().__init__(len(dataset), (1, size, size))
        self.dataset, self.field, self.size = dataset, field, int(size)
        if len(dataset):
            self[0]  # a size that does not divide the shards' maps fails here, like the in-memory load

    def rows(self, unique: np.ndarray) -> torch.Tensor:
        return _resize(self.dataset.read_rows(self.field, unique), self.size)

    def blocks(self, rows: int = _BLOCK):
        """The whole split in order, ``rows`` maps at a time."""
        for start in range(0, len(self), rows):
            yield self[np.arange(start, min(start + rows, len(self)))]


Maps = torch.Tensor | ShardMaps


@dataclass
class Split(PersonPairs):
    """Every sample of one split: maps (N, 1, S, S) in mm (float32; in memory or :class:`ShardMaps`)
    and the conditioning vectors."""

    detail: Maps              # D(I), extracted, mm
    truth: Maps | None        # the generator's true D(I), mm (synthetic data only)
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


def load_split(index_path, split: str, size: int, stream: bool = False) -> Split:
    """Read one split of the DetP shards (``index_path``) at ``size``²; with ``stream`` the maps stay
    in the shards (:class:`ShardMaps`) and only the vectors are read."""
    ds = DetPDataset(index_path, split)
    try:
        fields = set(ds.fields)
        missing = [k for k in ("detail", *VECTOR_FIELDS, "age_dist", "age", "identity") if k not in fields]
        if missing:
            raise UserError(f"the DetP shards of {index_path} lack {', '.join(missing)}; rebuild them with "
                            "`facedet3d shards` after `annotate`")
        age = np.concatenate([ds.read("age_dist"), ds.read("age")[:, None] / 100.0], axis=1)
        if stream:
            maps = {"detail": ShardMaps(ds, "detail", size),
                    "truth": ShardMaps(ds, "gt_detail", size) if "gt_detail" in fields else None}
        else:
            maps = {"detail": _resize(ds.read("detail"), size),
                    "truth": _resize(ds.read("gt_detail"), size) if "gt_detail" in fields else None}
        split = Split(
            **maps,
            age=torch.from_numpy(age.astype(np.float32)),
            identity=ds.read("identity"), ids=ds.read("id"), kind=ds.read("kind"),
            sequence=ds.read("sequence"), frame=ds.read("frame"),
            **{k: torch.from_numpy(ds.read(k).astype(np.float32, copy=False)) for k in VECTOR_FIELDS},
        )
    except BaseException:
        ds.close()
        raise
    if not stream:  # everything was read; a streamed split keeps its files open
        ds.close()
    return split


def region_and_scale(maps: Maps) -> tuple[torch.Tensor, float]:
    """The face region (texels any map touches, :func:`.metrics.face_region`) and the maps' std
    over it in mm (DetP's network unit). A streamed split is scanned in blocks: per texel max |d|,
    sum and sum of squares in float64; the std comes out as the in-memory float32 ``std()`` does
    (torch accumulates it in float64 too)."""
    if isinstance(maps, torch.Tensor):
        region = face_region(maps)
        return region, float(maps[region.expand_as(maps)].std())
    side = (maps.size, maps.size)
    amax = torch.zeros(1, 1, *side)
    total, squares = torch.zeros(side, dtype=torch.float64), torch.zeros(side, dtype=torch.float64)
    for block in maps.blocks():
        amax = torch.maximum(amax, block.abs().amax(0, keepdim=True))
        block = block[:, 0].double()
        total += block.sum(0)
        squares += block.square().sum(0)
    region = amax > 0
    count = len(maps) * int(region.sum())
    inside = region[0, 0]
    mean = float(total[inside].sum()) / count
    var = (float(squares[inside].sum()) - count * mean * mean) / (count - 1) if count > 1 else math.nan
    return region, float(torch.tensor(math.sqrt(max(var, 0.0)), dtype=torch.float32))


def make_batch_fn(train: Split, batch: int, seed: int, scale: float):
    """``batch_fn(step, world=SINGLE)`` for the training loop: a pure function of the step.

    Each batch holds ``batch`` sources; each source has a partner of the same person in another
    expression (Eq. 18's pairs: its target AUs y, α_e and its map D(I_y)) and a random target
    expression (y, α̂_e) of any training image (the adversarial part). Maps are in network units
    (mm / scale). The step's global indices are drawn whatever the ``world``; a process gets its
    rows :func:`~facedet3d.train.distributed.rank_rows` of them and reads only those maps (one
    read of its sources' and partners' rows).
    """
    pairs = train.sampler(seed, require="DetP has no pairs to learn from")

    def batch_fn(step: int, world: World = SINGLE) -> dict:
        rng = np.random.default_rng([seed, 0xDE7, step])
        src, tgt = pairs.draw(rng, batch)
        rnd = rng.integers(0, len(train), size=batch)
        rows = rank_rows(batch, world)
        src, tgt, rnd = src[rows], tgt[rows], rnd[rows]
        maps = train.detail[np.concatenate([src, tgt])]
        n = len(src)
        out = {f"src_{k}": v for k, v in train.conditioning(src).items()}
        out |= {"src_detail": maps[:n] / scale, "pair_detail": maps[n:] / scale,
                "pair_aus": train.aus[tgt], "pair_expr": train.expr[tgt],
                "rand_aus": train.aus[rnd], "rand_expr": train.expr[rnd]}
        return out

    return batch_fn
