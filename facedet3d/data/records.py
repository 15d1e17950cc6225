"""Per-chunk record files: one HDF5 file holding equal-length arrays, one row per item.

Stages write their per-chunk outputs (the synthetic ground truth, extraction records)
with :func:`write_records` and read them back with :func:`read_records`. Writes are
atomic (a temporary name, then a rename) and reproducible: no HDF5 timestamps, fixed
dataset order, deterministic compression, so the same arrays give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from facedet3d.atomic import atomic_path, write_json_atomic

# Arrays at least this large (bytes per row) are chunked one row per HDF5 chunk and compressed.
_ROW_CHUNK_BYTES = 4096
_COMPRESSION_OPTIONS = {
    "gzip": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "lzf": {"compression": "lzf", "shuffle": True},
    "none": {},
}
COMPRESSIONS = tuple(_COMPRESSION_OPTIONS)


def stack_fields(rows: dict[str, list]) -> dict[str, np.ndarray]:
    """Per-row values collected by field name -> arrays (N, ...) ready for :func:`write_records`."""
    return {k: np.stack(v) if isinstance(v[0], np.ndarray) else np.asarray(v) for k, v in rows.items() if v}


def write_records(path: str | Path, fields: dict[str, np.ndarray], attrs: dict | None = None,
                  compression: str = "gzip") -> Path:
    """Write fields {name: array (N, ...)} (same N) and scalar attrs to path atomically.

    String fields (numpy unicode or object arrays of str) are stored as UTF-8. Large per-row
    arrays are chunked one row per HDF5 chunk and compressed with ``compression``: "gzip"
    (level 1 + shuffle), "lzf" or "none"; all are deterministic.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
    path = Path(path)
    lengths = {name: len(a) for name, a in fields.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"record fields differ in length: {lengths}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver=("v110", "v110"), track_order=False) as f:
        for name in sorted(fields):
            _write_field(f, name, fields[name], compression)
        for key in sorted(attrs or {}):
            f.attrs[key] = (attrs or {})[key]
    return path


def _write_field(f: h5py.File, name: str, array: np.ndarray, compression: str) -> None:
    array = np.asarray(array)
    if array.dtype.kind in "UO":
        data = np.array([str(s) for s in array.reshape(-1)], dtype=object).reshape(array.shape)
        f.create_dataset(name, data=data, dtype=h5py.string_dtype("utf-8"), track_times=False)
        return
    row_bytes = array[0].nbytes if len(array) else 0
    if row_bytes >= _ROW_CHUNK_BYTES:
        f.create_dataset(name, data=array, chunks=(1, *array.shape[1:]), track_times=False,
                         **_COMPRESSION_OPTIONS[compression])
    else:
        f.create_dataset(name, data=array, track_times=False)


def read_records(path: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read all (or the named) fields of a record file into memory; strings come back as str."""
    with h5py.File(path, "r") as f:
        out = {}
        for name in names or list(f.keys()):
            ds = f[name]
            out[name] = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]
        return out


def write_timing(path: str | Path, seconds: float, n: int) -> Path:
    """A chunk job's wall time and item count, beside its records (which stay byte-identical)."""
    return write_json_atomic(path, {"seconds": round(float(seconds), 3), "n": int(n)})


def read_timings(paths) -> tuple[float, int]:
    """Total seconds and items over chunk timing files."""
    seconds, n = 0.0, 0
    for path in paths:
        timing = json.loads(Path(path).read_text(encoding="utf-8"))
        seconds, n = seconds + timing["seconds"], n + timing["n"]
    return seconds, n
