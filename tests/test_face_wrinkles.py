"""The synthetic wrinkle model (face/wrinkles.py) and AU combinations (face/expressions.py)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from facedet3d.face import expressions as ex
from facedet3d.face.layout import AU_INDEX, AU_NAMES, face_mask_uv, uv_grid_xy
from facedet3d.face.wrinkles import (
    AU_REGIONS, WRINKLE_AUS, WrinkleBank, box_crop, au_gain, au_region_mask, sample_identity_details,
)

SIZE = 192


def _identity(seed: int):
    return sample_identity_details(np.random.default_rng(seed))


@pytest.fixture(scope="module")
def bank() -> WrinkleBank:
    return WrinkleBank(_identity(3), SIZE)


def _aus(**kw: float) -> np.ndarray:
    a = np.zeros(len(AU_NAMES), np.float32)
    for k, v in kw.items():
        a[AU_INDEX[k]] = v
    return a


def _highpass(h: np.ndarray, k: int = 4) -> np.ndarray:
    """h minus its (2k+1)² box mean."""
    p = np.pad(h.astype(np.float64), k, mode="edge")
    c = np.pad(p.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    n = 2 * k + 1
    return h - (c[n:, n:] - c[:-n, n:] - c[n:, :-n] + c[:-n, :-n]) / n**2


def _box_energy(h: np.ndarray, box) -> float:
    rs, cs, _, _ = box_crop(box, h.shape[0])
    return float(np.abs(_highpass(h))[rs, cs].mean())


def test_regions_cover_the_wrinkle_aus():
    assert set(WRINKLE_AUS) == set(AU_NAMES) - {"AU25", "AU26"}
    assert au_region_mask("AU25", SIZE).sum() == 0
    # Regions sit where the anatomy is: forehead above the brows, glabella on the midline, ...
    for au, (ymin, ymax) in {"AU01": (20, 72), "AU02": (20, 70), "AU23": (-60, -44), "AU17": (-100, -70)}.items():
        for x0, x1, y0, y1 in AU_REGIONS[au]:
            assert ymin <= y0 < y1 <= ymax
    assert all(abs(x0) <= 14 and abs(x1) <= 14 for x0, x1, _, _ in AU_REGIONS["AU04"])


@pytest.mark.parametrize("au", WRINKLE_AUS)
def test_each_au_deepens_its_own_region_only(bank, au):
    maps = [bank.detail_map(_aus(**{au: i}), age=55.0) for i in range(6)]
    for box in AU_REGIONS[au]:
        e = np.array([_box_energy(h, box) for h in maps])
        assert np.all(np.diff(e) > 0), (au, box, e)
        assert e[-1] > 1.03 * e[0], (au, box, e)
        rs, cs, _, _ = box_crop(box, SIZE)
        assert np.abs(maps[-1] - maps[0])[rs, cs].max() > 0.02, (au, box)
    outside = ~au_region_mask(au, SIZE)
    assert np.array_equal(maps[-1][outside], maps[0][outside]), au


def test_patterns_fade_out_before_their_box_edges():
    """No hard cuts: every stored pattern is ~0 on its box border (except on the midline)."""
    for seed in range(3):
        b = WrinkleBank(_identity(seed), 256)
        for a, rs, cs, p in b.layers:
            edges = [p[0], p[-1]] + [p[:, j] for j, c in ((0, cs.start), (-1, cs.stop)) if c != 128]
            assert max(np.abs(e).max() for e in edges) < 0.03, (AU_NAMES[a], rs, cs)


def test_same_seed_same_maps_bitwise(bank):
    assert _identity(3) == bank.identity
    other = WrinkleBank(_identity(3), SIZE)
    aus = ex.expression_aus("fear", 4.0)
    assert np.array_equal(other.detail_map(aus, 40.0), bank.detail_map(aus, 40.0))
    assert bank.detail_map(aus, 40.0).dtype == np.float32


def test_static_part_does_not_change_with_expression(bank):
    static = bank.static_map(60.0)
    assert np.array_equal(static, bank.detail_map(np.zeros(17, np.float32), 60.0))
    rng = np.random.default_rng(0)
    for _ in range(5):
        name, aus = ex.sample_expression(rng)
        h = bank.detail_map(aus, 60.0)
        active = np.zeros((SIZE, SIZE), bool)
        for i in np.flatnonzero(aus):
            active |= au_region_mask(AU_NAMES[i], SIZE)
        assert np.array_equal(h[~active], static[~active]), name
    # Young skin at neutral is micro-structure only; old skin keeps faint lines.
    assert np.array_equal(bank.static_map(22.0), bank.micro)
    forehead = AU_REGIONS["AU01"][0]
    assert _box_energy(bank.static_map(70.0), forehead) > 1.3 * _box_energy(bank.micro, forehead)
    assert -0.35 < bank.static_map(70.0).min() and np.abs(bank.micro).max() < 0.2


def test_identities_differ(bank):
    ids = [_identity(s) for s in (1, 2)]
    assert ids[0].forehead_spacing != ids[1].forehead_spacing
    p = [WrinkleBank(i, SIZE).au_pattern("AU01").ravel() for i in ids]
    assert np.corrcoef(p[0], p[1])[0, 1] < 0.6
    assert not np.allclose(WrinkleBank(ids[0], SIZE).micro, WrinkleBank(ids[1], SIZE).micro)


def test_left_right_similar_but_not_identical(bank):
    for au in ("AU06", "AU12", "AU15"):
        p = bank.au_pattern(au)
        mirrored = p[:, ::-1]
        assert 0.3 < np.corrcoef(p.ravel(), mirrored.ravel())[0, 1] < 0.999, au


def test_age_deepens_wrinkles(bank):
    for name in ex.EMOTIONS:
        aus = ex.expression_aus(name, 4.0)
        for i in np.flatnonzero(aus):
            for box in AU_REGIONS[AU_NAMES[i]]:
                young = _box_energy(bank.detail_map(aus, 22.0), box)
                old = _box_energy(bank.detail_map(aus, 70.0), box)
                assert old > young, (name, AU_NAMES[i], box)


def test_amplitudes_are_plausible():
    idn = dataclasses.replace(_identity(5), susceptibility=(1.0,) * 17)
    b = WrinkleBank(idn, 256)
    forehead = b.detail_map(_aus(AU01=5.0, AU02=5.0), 70.0) - b.static_map(70.0)
    assert -0.9 < forehead.min() < -0.3
    pores = b.micro[face_mask_uv(256, margin=10)]
    assert 0.003 < pores.std() < 0.03
    g = au_gain(np.arange(6))
    assert g[0] == 0 and abs(g[-1] - 1) < 1e-6 and np.all(np.diff(g) > 0) and np.all(np.diff(g, 2) < 0)


def test_zero_outside_face_eyes_and_mouth(bank):
    h = bank.detail_map(np.full(17, 5.0, np.float32), 70.0)
    assert np.abs(h).max() > 0.2
    assert np.all(h[~face_mask_uv(SIZE)] == 0)
    xy = uv_grid_xy(SIZE)
    x, y = np.abs(xy[..., 0]), xy[..., 1]
    eyes = ((x - 32) / 14) ** 2 + (y / 6) ** 2 < 1
    mouth = (x / 23) ** 2 + ((y + 62) / 1.8) ** 2 < 1
    assert eyes.sum() > 20 and mouth.sum() > 5
    assert np.all(h[eyes] == 0) and np.all(h[mouth] == 0)


def test_bank_is_fast():
    t = time.perf_counter()
    b = WrinkleBank(_identity(9), 1024)
    build = time.perf_counter() - t
    aus = ex.expression_aus("happy", 4.0)
    b.detail_map(aus, 50.0)
    t = time.perf_counter()
    for _ in range(5):
        h = b.detail_map(aus, 50.0)
    per_map = (time.perf_counter() - t) / 5
    assert h.shape == (1024, 1024) and h.dtype == np.float32
    assert build < 3.0 and per_map < 0.05, (build, per_map)  # ~0.3 s and ~3 ms on 2 cores


EXPECTED = {
    "neutral": set(),
    "happy": {"AU06", "AU12", "AU25"},
    "sad": {"AU01", "AU04", "AU15", "AU17"},
    "surprise": {"AU01", "AU02", "AU05", "AU26", "AU25"},
    "fear": {"AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26"},
    "anger": {"AU04", "AU05", "AU07", "AU23", "AU17"},
    "disgust": {"AU09", "AU10", "AU15", "AU17"},
}


def test_prototypes_use_only_their_aus():
    assert set(ex.EXPRESSION_NAMES) == set(EXPECTED)
    for name, aus in EXPECTED.items():
        v = ex.expression_aus(name, 4.0)
        assert v.shape == (17,) and v.dtype == np.float32
        assert {AU_NAMES[i] for i in np.flatnonzero(v)} == aus, name
        assert v.max() == (4.0 if aus else 0.0)


def test_sample_expression_is_realistic():
    rng = np.random.default_rng(1)
    names = set()
    for _ in range(300):
        name, aus = ex.sample_expression(rng)
        assert aus.shape == (17,) and aus.dtype == np.float32 and aus.min() >= 0 and aus.max() <= 5
        allowed = set().union(*(EXPECTED[n] for n in name.split("+")))
        extra = {AU_NAMES[i] for i in np.flatnonzero(aus)} - allowed
        assert len(extra) <= 1, (name, extra)
        names.add(name)
    assert set(ex.EXPRESSION_NAMES) <= names and any("+" in n for n in names)
    a, b = ex.sample_expression(np.random.default_rng(7)), ex.sample_expression(np.random.default_rng(7))
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_video_sequence_ramps_from_neutral_to_apex():
    apex = ex.expression_aus("surprise", 4.5)
    seq = ex.video_sequence(apex, 12)
    assert seq.shape == (12, 17) and seq.dtype == np.float32
    assert np.all(seq[0] == 0) and np.allclose(seq[-1], apex)
    assert np.all(np.diff(seq, axis=0) >= 0)
    steps = np.diff(seq[:, AU_INDEX["AU01"]])
    assert steps[0] < steps[len(steps) // 2]  # ease-in: slow onset
