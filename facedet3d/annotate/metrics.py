"""Small pure metrics for the annotation summary (``results/annotate/summary.json``).

``au_mae`` → key ``au_mae``, ``verification_auc`` → ``id_auc``, ``spearman`` → ``age_spearman``.
All take array-likes and return Python floats (``per_au_corr``: an array); rows containing
NaN (failed faces) are left out, and a metric that is undefined (no pairs, constant input)
is NaN rather than an exception.
"""

from __future__ import annotations

import numpy as np


def au_mae(pred, gt) -> float:
    """Mean absolute error over all faces and AUs of (N, K) predictions vs ground truth.

    Faces (rows) with a NaN in either array are excluded; NaN if none is left.
    """
    p, g = _pair_rows(pred, gt)
    return float(np.abs(p - g).mean()) if p.size else float("nan")


def per_au_mae(pred, gt) -> np.ndarray:
    """(K,) mean absolute error of each AU (column)."""
    p, g = _pair_rows(pred, gt)
    return np.abs(p - g).mean(0) if len(p) else np.full(p.shape[1], np.nan)


def per_au_corr(pred, gt) -> np.ndarray:
    """(K,) Pearson correlation of each AU (column) between predictions and ground truth;
    NaN for a column that is constant in either array (e.g. an AU never active)."""
    p, g = _pair_rows(pred, gt)
    out = np.full(p.shape[1], np.nan)
    if len(p) < 2:
        return out
    pc, gc = p - p.mean(0), g - g.mean(0)
    den = np.sqrt((pc ** 2).sum(0) * (gc ** 2).sum(0))
    ok = den > 1e-12 * max(1.0, float(np.abs(p).max(initial=0.0) * np.abs(g).max(initial=0.0)))
    out[ok] = (pc * gc).sum(0)[ok] / den[ok]
    return out


def verification_auc(embeddings, identities) -> float:
    """Face verification AUC over all pairs i < j: how often a same-identity pair has a higher
    cosine similarity than a different-identity pair (ties count 1/2; Mann-Whitney U / n+ n-).
    NaN without both kinds of pair. Rows with NaN are excluded."""
    e = np.asarray(embeddings, np.float64)
    ids = np.asarray(identities)
    if e.ndim != 2 or len(e) != len(ids):
        raise ValueError(f"need embeddings (N, D) and N identities, got {e.shape} and {ids.shape}")
    keep = np.isfinite(e).all(1)
    e, ids = e[keep], ids[keep]
    if len(e) < 2:
        return float("nan")
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    iu = np.triu_indices(len(e), 1)
    sim = (e @ e.T)[iu]
    same = (ids[:, None] == ids[None, :])[iu]
    return _auc(sim[same], sim[~same])


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson of average ranks) of two (N,) arrays; pairs with a
    NaN are excluded; NaN when fewer than 2 pairs or one side is constant."""
    x, y = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs equal lengths, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan")
    rx, ry = _rank(x), _rank(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = _rank(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _rank(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x))
    start = 0
    boundaries = np.flatnonzero(np.diff(xs) != 0) + 1
    for end in list(boundaries) + [len(x)]:
        ranks[order[start:end]] = (start + end + 1) / 2
        start = end
    return ranks


def _pair_rows(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    p = p[None] if p.ndim == 1 else p
    g = g[None] if g.ndim == 1 else g
    if p.shape != g.shape or p.ndim != 2:
        raise ValueError(f"predictions {p.shape} and ground truth {g.shape} must both be (N, K)")
    keep = np.isfinite(p).all(1) & np.isfinite(g).all(1)
    return p[keep], g[keep]
