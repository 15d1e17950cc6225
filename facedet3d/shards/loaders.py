"""Torch datasets and samplers over the `shards` stage's HDF5 shards.

Shards are opened lazily, on first access, in the process that reads them (each DataLoader
worker opens its own handles); ``__getstate__`` drops open handles so a dataset pickles to
its paths only, and a handle inherited through fork is never used. Integrity (sha256) is
checked on demand with :func:`verify_index`, never per sample.

Reading is batched and streams: nothing of a split is held in memory beyond the rows asked
for. :meth:`_ShardSet.read_rows` reads the rows of one field at any global indices (any
order, repeats allowed) into one preallocated array: the indices are sorted, grouped per
shard, and each row lands directly in its slot of the output, so the caller's order comes
back without a further copy. For the shards' default layout (no compression, one row per
HDF5 chunk, or a contiguous small array) the byte offset of every row is looked up once
from the HDF5 chunk index and a row is then one ``preadv`` from the file into its output
slot: no HDF5 selection, chunk cache or temporary per row (h5py's per-call overhead made a
256² map cost ~4x its copy time). Compressed shards and string fields go through h5py.
:meth:`DetPDataset.batch` builds a whole batch of tensors that way; :func:`batch_loader`
is a DataLoader over it (a batch sampler hands each worker whole batches, no per-sample
dicts, no collate copy).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, get_worker_info

from facedet3d.shards.format import read_index, verify_index  # noqa: F401  (verify_index re-exported)
from facedet3d.errors import UserError

_STRING_FIELDS = {"id", "identity", "sequence", "kind", "split"}
# HDF5 files a dataset keeps open at once (least recently used closed first): an h5py file holds
# HDF5's metadata cache, so memory must not grow with the number of shards. The row reads use
# plain file descriptors (no HDF5 state), of which more stay open.
_OPEN_H5 = 8
_OPEN_FDS = 256
_PREADV = hasattr(os, "preadv")


def _row_offsets(ds: h5py.Dataset) -> np.ndarray | None:
    """The file offset of every row of ``ds`` when each row is its own plain bytes in the file
    (a native numeric dtype, no filter, and a contiguous layout or one allocated chunk per row);
    else None (the row is read through h5py)."""
    if ds.dtype.kind not in "biufc" or not ds.dtype.isnative or ds.ndim == 0 or ds.shape[0] == 0:
        return None
    plist = ds.id.get_create_plist()
    if plist.get_nfilters() or plist.get_external_count():
        return None
    n = ds.shape[0]
    row = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        base = ds.id.get_offset()
        return None if base is None else base + row * np.arange(n, dtype=np.int64)
    if layout != h5py.h5d.CHUNKED or ds.chunks != (1, *ds.shape[1:]):
        return None
    offsets = np.full(n, -1, np.int64)

    def visit(info) -> None:
        if info.size == row and not info.filter_mask and info.byte_offset is not None:
            offsets[info.chunk_offset[0]] = info.byte_offset

    try:
        ds.id.chunk_iter(visit)  # HDF5 >= 1.14: the whole chunk index in one pass
    except (AttributeError, NotImplementedError):
        for i in range(ds.id.get_num_chunks()):
            visit(ds.id.get_chunk_info(i))
    return None if (offsets < 0).any() else offsets


def _pread_into(fd: int, buf: np.ndarray, offset: int, path: str) -> None:
    """Fill ``buf`` (1-D uint8, contiguous) with the file's bytes at ``offset``."""
    view, done = memoryview(buf), 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise UserError(f"{path} ends inside a row (truncated?); check the shards with `facedet3d verify`")
        done += got


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
            # dtype, row shape and whether it is text, per field (the same in every shard)
            self._meta = {k: (f[k].dtype, f[k].shape[1:], h5py.check_string_dtype(f[k].dtype) is not None)
                          for k in available}
        self.fields = list(fields) if fields is not None else available
        missing = [k for k in self.fields if k not in available]
        if missing:
            raise UserError(f"{self.paths[0]} has no field(s) {', '.join(missing)}; available: {', '.join(available)}")
        self._reset()

    def _reset(self) -> None:
        self._files: OrderedDict[int, h5py.File] = OrderedDict()
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._raw: dict[tuple[int, str], np.ndarray | None] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_fds"] = OrderedDict(), OrderedDict()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        for fd in self._fds.values():
            os.close(fd)
        self._files, self._fds = OrderedDict(), OrderedDict()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: never use the parent's handles (the row offsets hold)
            for fd in self._fds.values():
                os.close(fd)  # this process's copies of the parent's descriptors
            raw = self._raw
            self._reset()
            self._raw = raw

    def _file(self, s: int) -> h5py.File:
        self._check_pid()
        f = self._files.pop(s, None)
        if f is None:
            f = h5py.File(self.paths[s], "r")
            while len(self._files) >= _OPEN_H5:
                self._files.popitem(last=False)[1].close()
        self._files[s] = f
        return f

    def _fd(self, s: int) -> int:
        self._check_pid()
        fd = self._fds.pop(s, None)
        if fd is None:
            fd = os.open(self.paths[s], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            while len(self._fds) >= _OPEN_FDS:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[s] = fd
        return fd

    def _row_offsets(self, s: int, name: str) -> np.ndarray | None:
        key = (s, name)
        if key not in self._raw:
            self._raw[key] = _row_offsets(self._file(s)[name]) if _PREADV else None
        return self._raw[key]

    def _locate(self, i: int) -> tuple[int, int]:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return s, i - int(self.offsets[s])

    def field(self, name: str) -> tuple[np.dtype, tuple[int, ...], bool]:
        """(dtype, row shape, whether text) of field ``name`` (the same in every shard)."""
        if name not in self._meta:
            raise UserError(f"{self.paths[0]} has no field {name}; available: {', '.join(sorted(self._meta))}")
        return self._meta[name]

    def read(self, name: str) -> np.ndarray:
        """One field over the whole split (for small metadata: identity, aus, sequence, frame...),
        read shard by shard into one array."""
        dtype, row_shape, text = self.field(name)
        out = np.empty((len(self), *row_shape), object if text else dtype)
        for s in range(len(self.paths)):
            ds, lo, hi = self._file(s)[name], int(self.offsets[s]), int(self.offsets[s + 1])
            if text:
                out[lo:hi] = ds.asstr()[()]
            elif hi > lo:
                ds.read_direct(out, dest_sel=np.s_[lo:hi])
        return out

    def read_rows(self, name: str, indices, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``indices`` (global, any order, repeats allowed; negative counts from the end) of
        field ``name`` as one array (len(indices), *row) in the order given; strings as an object
        array of str. ``out``: a C-contiguous array of that shape and dtype to fill instead.

        The indices are sorted and grouped per shard; each row is read straight into its slot.
        """
        dtype, row_shape, text = self.field(name)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        shape = (len(idx), *row_shape)
        if out is None:
            out = np.empty(shape, object if text else dtype)
        elif out.shape != shape or out.dtype != (object if text else dtype) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {shape} {dtype} array, not {out.shape} {out.dtype}")
        if not len(idx):
            return out
        order = np.argsort(idx, kind="stable")
        ordered = idx[order]
        shard = np.searchsorted(self.offsets, ordered, side="right") - 1
        cuts = [0, *(np.flatnonzero(np.diff(shard)) + 1).tolist(), len(ordered)]
        flat = None if text else out.reshape(len(out), -1).view(np.uint8)
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            s = int(shard[lo])
            rows, slots = ordered[lo:hi] - self.offsets[s], order[lo:hi]
            offsets = None if text else self._row_offsets(s, name)
            if offsets is not None:
                fd, size = self._fd(s), flat.shape[1]
                for offset, j in zip(offsets[rows].tolist(), slots.tolist()):
                    if os.preadv(fd, [flat[j]], offset) != size:  # a short read: finish it or fail clearly
                        _pread_into(fd, flat[j], offset, self.paths[s])
            else:
                self._read_h5(s, name, rows, out, slots, text)
        return out

    def _read_h5(self, s: int, name: str, rows: np.ndarray, out: np.ndarray, slots: np.ndarray, text: bool) -> None:
        """Sorted ``rows`` of shard ``s`` into ``out[slots]`` through h5py (strings, compressed shards)."""
        ds = self._file(s)[name]
        view = ds.asstr() if text else ds
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo <= 2 * len(rows) or text and hi - lo <= 1024:  # dense (or a few strings): one slice read
            out[slots] = view[lo:hi][rows - lo]
        elif text:
            for r, j in zip(rows.tolist(), slots.tolist()):
                out[j] = view[r]
        else:
            for r, j in zip(rows.tolist(), slots.tolist()):
                ds.read_direct(out, np.s_[r], np.s_[j])


def _empty(shape: tuple, dtype, shared: bool | None = None) -> torch.Tensor:
    """An uninitialised tensor; ``shared`` (default: in a DataLoader worker) in shared memory already,
    so that passing it to the main process does not copy it there (what torch does with a worker's
    ordinary tensors)."""
    dtype = dtype if isinstance(dtype, torch.dtype) else torch.from_numpy(np.empty(0, dtype)).dtype
    if not (get_worker_info() is not None if shared is None else shared):
        return torch.empty(shape, dtype=dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
    return torch.empty(0, dtype=dtype).set_(torch.UntypedStorage._new_shared(max(nbytes, 1)), 0, shape)


def _is_pairs(indices) -> bool:
    return len(indices) > 0 and (isinstance(indices[0], (tuple, list)) or np.ndim(indices) == 2)


def _indices(index, n: int) -> np.ndarray:
    """Integer indices (int, array, tensor of any shape; a slice) as an int64 array, negatives counted
    from the end; IndexError out of range."""
    if isinstance(index, slice):
        return np.arange(n)[index]
    idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"a streamed split takes integer indices, not {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"index out of range for {n} rows")
    return np.where(idx < 0, idx + n, idx)


class LazyRows:
    """Rows of a split read on indexing, for splits too large to hold: ``self[idx]`` (integer indices
    of any shape, or a slice) is a tensor (*idx.shape, *row), each distinct row read once, in
    ascending order (repeats are copied). Subclasses say how to read rows (:meth:`rows`)."""

    def __init__(self, n: int, row: tuple[int, ...]):
        self.n, self.row = int(n), tuple(row)

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.row)

    def rows(self, unique: np.ndarray) -> torch.Tensor:
        """Rows ``unique`` (ascending, distinct) as one contiguous tensor (len(unique), *row)."""
        raise NotImplementedError

    def __getitem__(self, index) -> torch.Tensor:
        idx = _indices(index, self.n)
        unique, inverse = np.unique(idx.reshape(-1), return_inverse=True)
        out = self.rows(unique)
        if len(unique) != idx.size or not np.array_equal(unique, idx.reshape(-1)):
            out = out[torch.from_numpy(inverse.reshape(-1))]
        return out.reshape(*idx.shape, *self.row)


class DetPDataset(_ShardSet):
    """DetP samples of one split: dicts {field: tensor or str}; index with an int or an (a, b) pair.

    Args:
        index_path: the shards' index.json.
        split: train, val or test.
        fields: the fields to load (default all); e.g. ("detail", "texture", "aus").
    Maps keep their stored dtypes (detail float16 mm, texture uint8 HWC); convert on the GPU.
    A pair index (from :class:`PairSampler` / :class:`VideoPairSampler`) gives a (source, target) tuple.
    :meth:`batch` reads a whole batch at once (what :func:`batch_loader` uses; much faster than
    a DataLoader collating samples).
    """

    kind = "detp"

    def batch(self, indices, fields=None, shared: bool | None = None) -> dict:
        """Samples ``indices`` as one batch {field: tensor (B, ...) or list of B str}, the same
        values a DataLoader's default collate gives; pair indices give a (sources, targets) tuple.
        ``shared``: tensors in shared memory (default: when called in a DataLoader worker)."""
        if _is_pairs(indices):
            src, tgt = zip(*[(int(a), int(b)) for a, b in indices])
            return self.batch(src, fields, shared), self.batch(tgt, fields, shared)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out, n = {}, len(indices)
        for name in fields or self.fields:
            dtype, row_shape, text = self.field(name)
            if text:
                out[name] = self.read_rows(name, indices).tolist()
            else:
                out[name] = _empty((n, *row_shape), dtype, shared)
                self.read_rows(name, indices, out=out[name].numpy())
        return out

    def __getitem__(self, index):
        if isinstance(index, (tuple, list)):
            return tuple(self[i] for i in index)
        self._locate(index)  # IndexError past the end (iteration stops there)
        return {k: v[0] for k, v in self.batch([index]).items()}

    def __getitems__(self, indices: list) -> list:
        """Batched fetch (used by DataLoader's default collation): one read of the batch, then
        per-sample views of it (in private memory: the collate copies them into the batch)."""
        if _is_pairs(indices):
            src, tgt = self.batch(indices, shared=False)
            return [({k: v[j] for k, v in src.items()}, {k: v[j] for k, v in tgt.items()}) for j in range(len(indices))]
        rows = self.batch(indices, shared=False)
        return [{k: v[j] for k, v in rows.items()} for j in range(len(indices))]


class RCANDataset(_ShardSet):
    """RCAN ×4 training pairs of one split: (lr (1, p/4, p/4), hr (1, p, p)) float32 tensors in mm."""

    kind = "rcan"

    def __init__(self, index_path: str | Path, split: str):
        super().__init__(index_path, split, fields=["lr", "hr"])

    def batch(self, indices, shared: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs ``indices`` as (lr (B, 1, p/4, p/4), hr (B, 1, p, p)) float32 mm (``shared``: as
        :meth:`DetPDataset.batch`)."""
        out = []
        for name in ("lr", "hr"):
            rows = torch.from_numpy(self.read_rows(name, indices))[:, None]
            out.append(_empty(rows.shape, torch.float32, shared).copy_(rows))  # float16 -> float32 (exact)
        return tuple(out)

    def __getitem__(self, index):
        self._locate(index)
        lr, hr = self.batch([index])
        return lr[0], hr[0]

    def __getitems__(self, indices: list) -> list:
        lr, hr = self.batch(indices, shared=False)
        return [(lr[j], hr[j]) for j in range(len(indices))]


class _Batches(Dataset):
    """Whole batches of a shard dataset: ``self[indices]`` is ``dataset.batch(indices)``."""

    def __init__(self, dataset: _ShardSet):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices):
        return self.dataset.batch(indices)


def batch_loader(dataset: DetPDataset | RCANDataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                 sampler: Sampler | None = None, drop_last: bool = False, **loader_args) -> DataLoader:
    """A DataLoader of whole batches of a :class:`DetPDataset` or :class:`RCANDataset`.

    A batch sampler hands the loader (or each of its workers) the indices of a whole batch, read
    with one :meth:`~DetPDataset.batch` call: the rows sorted per shard, each read into the batch
    tensor, passed through without a collate copy. ``shuffle``: a seeded random order over the
    whole split, a new one each epoch; ``sampler``: any index sampler instead (e.g. a
    :class:`PairSampler`, then each batch is a (sources, targets) tuple). ``loader_args`` go to
    the DataLoader (num_workers, pin_memory, persistent_workers...).
    """
    if sampler is None:
        rows = range(len(dataset))
        sampler = (RandomSampler(rows, generator=torch.Generator().manual_seed(int(seed))) if shuffle
                   else SequentialSampler(rows))
    return DataLoader(_Batches(dataset), batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last),
                      **loader_args)


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
