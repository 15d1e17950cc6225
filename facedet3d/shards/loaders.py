"""Torch datasets and samplers over the `shards` stage's HDF5 shards.

Shards are opened lazily, on first access, in the process that reads them (each DataLoader
worker opens its own handles); ``__getstate__`` drops open handles so a dataset pickles to
its paths only, and a handle inherited through fork is never used. Integrity (sha256) is
checked on demand with :func:`verify_index`, never per sample.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from facedet3d.shards.format import read_index, verify_index  # noqa: F401  (verify_index re-exported)
from facedet3d.errors import UserError

_STRING_FIELDS = {"id", "identity", "sequence", "kind", "split"}


class _ShardSet(Dataset):
    """Rows of all shards of one kind and split, addressed by a global index."""

    kind = ""

    def __init__(self, index_path: str | Path, split: str, fields: list[str] | tuple[str, ...] | None = None):
        self.index_path = Path(index_path)
        index = read_index(self.index_path)
        entries = [e for e in index["shards"] if e["kind"] == self.kind and e["split"] == split]
        if not entries:
            raise UserError(f"{self.index_path} lists no {self.kind} shards of split {split!r}")
        self.split = split
        self.paths = [str(self.index_path.parent / e["path"]) for e in entries]
        self.offsets = np.cumsum([0] + [int(e["n"]) for e in entries])
        with h5py.File(self.paths[0], "r") as f:
            available = sorted(f.keys())
        self.fields = list(fields) if fields is not None else available
        missing = [k for k in self.fields if k not in available]
        if missing:
            raise UserError(f"{self.paths[0]} has no field(s) {', '.join(missing)}; available: {', '.join(available)}")
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def _file(self, s: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: never use the parent's handles
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(s)
        if f is None:
            f = self._files[s] = h5py.File(self.paths[s], "r")
        return f

    def _locate(self, i: int) -> tuple[int, int]:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return s, i - int(self.offsets[s])

    def read(self, name: str) -> np.ndarray:
        """One field over the whole split (for small metadata: identity, aus, sequence, frame...)."""
        parts = []
        for s in range(len(self.paths)):
            ds = self._file(s)[name]
            parts.append(ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()])
        return np.concatenate(parts)

    def _rows(self, s: int, sel, names) -> dict:
        f = self._file(s)
        out = {}
        for name in names:
            ds = f[name]
            out[name] = ds.asstr()[sel] if h5py.check_string_dtype(ds.dtype) else ds[sel]
        return out


def _to_sample(values: dict) -> dict:
    sample = {}
    for k, v in values.items():
        if isinstance(v, (str, bytes)):
            sample[k] = v if isinstance(v, str) else v.decode()
        else:
            sample[k] = torch.from_numpy(np.ascontiguousarray(v)) if np.ndim(v) else torch.tensor(v)
    return sample


class DetPDataset(_ShardSet):
    """DetP samples of one split: dicts {field: tensor or str}; index with an int or an (a, b) pair.

    Args:
        index_path: the shards' index.json.
        split: train, val or test.
        fields: the fields to load (default all); e.g. ("detail", "texture", "aus").
    Maps keep their stored dtypes (detail float16 mm, texture uint8 HWC); convert on the GPU.
    A pair index (from :class:`PairSampler` / :class:`VideoPairSampler`) gives a (source, target) tuple.
    """

    kind = "detp"

    def __getitem__(self, index):
        if isinstance(index, (tuple, list)):
            return tuple(self[i] for i in index)
        s, r = self._locate(index)
        return _to_sample(self._rows(s, r, self.fields))

    def __getitems__(self, indices: list) -> list:
        """Batched fetch (used by DataLoader): contiguous rows of one shard are read with one slice."""
        if not indices or isinstance(indices[0], (tuple, list)):
            return [self[i] for i in indices]
        located = [self._locate(i) for i in indices]
        out = []
        start = 0
        while start < len(located):  # runs of consecutive rows in one shard
            s, r0 = located[start]
            end = start + 1
            while end < len(located) and located[end] == (s, r0 + end - start):
                end += 1
            if end - start == 1:
                out.append(_to_sample(self._rows(s, r0, self.fields)))
            else:
                block = self._rows(s, slice(r0, r0 + end - start), self.fields)
                out.extend(_to_sample({k: v[j] for k, v in block.items()}) for j in range(end - start))
            start = end
        return out


class RCANDataset(_ShardSet):
    """RCAN ×4 training pairs of one split: (lr (1, p/4, p/4), hr (1, p, p)) float32 tensors in mm."""

    kind = "rcan"

    def __init__(self, index_path: str | Path, split: str):
        super().__init__(index_path, split, fields=["lr", "hr"])

    def __getitem__(self, index):
        s, r = self._locate(index)
        rows = self._rows(s, r, ("lr", "hr"))
        return (torch.from_numpy(rows["lr"].astype(np.float32))[None],
                torch.from_numpy(rows["hr"].astype(np.float32))[None])


class _PartnerSampler(Sampler):
    """Yields (source, target) pairs from ``candidates`` {source index: partner indices}.

    Each epoch visits every source once in a seeded random order with a random partner;
    ``set_epoch`` changes the draw, the same seed and epoch give the same pairs.
    """

    _stream = 0  # separates the random streams of the subclasses

    def __init__(self, candidates: dict[int, np.ndarray], seed: int):
        self.candidates = candidates
        self.sources = np.array(sorted(candidates), dtype=np.int64)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sources)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random sources (with replacement when there are fewer) and a random partner of each:
        the pairs of one training batch, drawn from the caller's ``rng``."""
        src = rng.choice(self.sources, size=n, replace=len(self.sources) < n)
        tgt = np.array([self.candidates[int(i)][rng.integers(len(self.candidates[int(i)]))] for i in src], np.int64)
        return src, tgt

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self._stream, self.epoch])
        for i in rng.permutation(self.sources):
            partners = self.candidates[int(i)]
            yield int(i), int(partners[rng.integers(len(partners))])


class PairSampler(_PartnerSampler):
    """(source, target) index pairs of the same identity with different expressions (aus differ).

    Each epoch visits every sample that has a partner once as source, in a seeded random order,
    with a random valid target. ``set_epoch`` changes the draw; the same seed and epoch give
    the same pairs. Use with a :class:`DetPDataset` (it accepts pair indices).

    Args:
        dataset: a DetPDataset (its identity and aus fields are read once) or a dict with
            ``identity`` (N,) and ``aus`` (N, 17) arrays.
        seed: sampling seed.
        min_au_diff: two samples have different expressions when max |aus_a - aus_b| > this.
        field: the expression field compared ("aus" annotated; "gt_aus" or "expr" also work).
    """

    _stream = 0x9A1

    def __init__(self, dataset, seed: int = 0, min_au_diff: float = 1e-3, field: str = "aus"):
        meta = dataset if isinstance(dataset, dict) else {k: dataset.read(k) for k in ("identity", field)}
        identity, aus = np.asarray(meta["identity"]), np.asarray(meta[field], np.float32)
        candidates: dict[int, np.ndarray] = {}
        for ident in np.unique(identity):
            members = np.flatnonzero(identity == ident)
            diff = np.abs(aus[members][:, None] - aus[members][None]).max(-1) > min_au_diff
            for a, i in enumerate(members):
                partners = members[diff[a]]
                if len(partners):
                    candidates[int(i)] = partners
        super().__init__(candidates, seed)


class PersonPairs:
    """For a split held in memory with ``identity`` (N,) and ``aus`` (N, 17) attributes: pairs of
    one person in two different expressions (DetP's and the renderer's splits)."""

    def sampler(self, seed: int = 0, require: str | None = None) -> PairSampler:
        """The :class:`PairSampler` of the split; with ``require``, a split without any pair is a
        UserError ending in that text (what cannot be done without pairs)."""
        pairs = PairSampler({"identity": self.identity, "aus": np.asarray(self.aus)}, seed=seed)
        if require and not len(pairs):
            raise UserError(f"no training person has two different expressions: {require}")
        return pairs

    def pairs(self, seed: int = 0) -> dict[int, np.ndarray]:
        """{source index: indices of the same person in another expression}."""
        return self.sampler(seed).candidates


class VideoPairSampler(_PartnerSampler):
    """(source, target) index pairs of two frames of the same video sequence, min_distance <= |Δframe| <= max_distance.

    Each epoch visits every video frame with a partner once, in a seeded random order.

    Args:
        dataset: a DetPDataset or a dict with ``kind``, ``sequence`` and ``frame`` arrays.
        seed: sampling seed.
        min_distance, max_distance: frame distance bounds (max None: any).
    """

    _stream = 0x71D

    def __init__(self, dataset, seed: int = 0, min_distance: int = 1, max_distance: int | None = None):
        if min_distance < 1:
            raise ValueError("min_distance must be >= 1 (a frame is never paired with itself)")
        meta = dataset if isinstance(dataset, dict) else {k: dataset.read(k) for k in ("kind", "sequence", "frame")}
        kind, seq = np.asarray(meta["kind"]), np.asarray(meta["sequence"])
        frame = np.asarray(meta["frame"]).astype(np.int64)
        candidates: dict[int, np.ndarray] = {}
        video = (kind == "video") & (seq != "")
        for s in np.unique(seq[video]):
            members = np.flatnonzero(video & (seq == s))
            dist = np.abs(frame[members][:, None] - frame[members][None])
            ok = dist >= min_distance
            if max_distance is not None:
                ok &= dist <= max_distance
            for a, i in enumerate(members):
                if ok[a].any():
                    candidates[int(i)] = members[ok[a]]
        super().__init__(candidates, seed)
