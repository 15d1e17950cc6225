"""Realistic Action Unit combinations: the six basic-emotion prototypes, mixtures and ramps.

AU vectors are (17,) float32 intensities 0..5 in layout.AU_NAMES order. The prototypes
(EMFACS-style) are stored as *unit* profiles — the defining AUs at 1.0, optional ones
lower — and scaled by an apex intensity with ``expression_aus(name, intensity)``.
"""

from __future__ import annotations

import numpy as np

from .layout import AU_INDEX, AU_MAX, AU_NAMES

N_AU = len(AU_NAMES)


def _profile(**aus: float) -> np.ndarray:
    v = np.zeros(N_AU, np.float32)
    for name, w in aus.items():
        v[AU_INDEX[name]] = w
    return v


PROTOTYPES: dict[str, np.ndarray] = {
    "neutral": _profile(),
    "happy": _profile(AU06=0.8, AU12=1.0, AU25=0.5),
    "sad": _profile(AU01=1.0, AU04=0.7, AU15=0.9, AU17=0.5),
    "surprise": _profile(AU01=1.0, AU02=1.0, AU05=0.8, AU26=0.8, AU25=0.6),
    "fear": _profile(AU01=1.0, AU02=0.8, AU04=0.7, AU05=0.9, AU07=0.6, AU20=0.8, AU26=0.6),
    "anger": _profile(AU04=1.0, AU05=0.6, AU07=0.9, AU23=0.9, AU17=0.5),
    "disgust": _profile(AU09=1.0, AU10=0.8, AU15=0.6, AU17=0.6),
}
"""Unit AU profiles (17,) float32 of the prototypes (max 1.0; multiply by an apex intensity)."""
EXPRESSION_NAMES: tuple[str, ...] = tuple(PROTOTYPES)
EMOTIONS: tuple[str, ...] = EXPRESSION_NAMES[1:]


def expression_aus(name: str, intensity: float = 4.0) -> np.ndarray:
    """AU intensities (17,) float32 of a prototype at apex intensity (0..5)."""
    return np.clip(PROTOTYPES[name] * np.float32(intensity), 0.0, AU_MAX).astype(np.float32)


def sample_expression(
    rng: np.random.Generator,
    intensity_range: tuple[float, float] = (1.5, 5.0),
    p_neutral: float = 0.08,
    p_mix: float = 0.25,
    jitter: float = 0.15,
    p_extra: float = 0.15,
) -> tuple[str, np.ndarray]:
    """Draw (name, aus (17,) float32 in 0..5).

    A prototype (name "happy"), or with probability p_mix a blend of two ("happy+surprise",
    weights a, 1 - a with a ~ U(0.3, 0.7)), scaled to an apex intensity ~ U(intensity_range);
    active AUs get multiplicative jitter N(1, jitter); with probability p_extra an extra AU is
    added (half the time an AU45 blink, else a random AU at low intensity).
    """
    if rng.random() < p_neutral:
        name, aus = "neutral", np.zeros(N_AU, np.float32)
    else:
        first = EMOTIONS[rng.integers(len(EMOTIONS))]
        profile = PROTOTYPES[first]
        name = first
        if rng.random() < p_mix:
            second = EMOTIONS[rng.integers(len(EMOTIONS))]
            if second != first:
                a = rng.uniform(0.3, 0.7)
                profile = a * profile + (1 - a) * PROTOTYPES[second]
                profile = profile / profile.max()
                name = f"{first}+{second}"
        aus = profile * rng.uniform(*intensity_range)
        aus = aus * np.where(aus > 0, rng.normal(1.0, jitter, N_AU), 0.0)
    if rng.random() < p_extra:
        if rng.random() < 0.5:
            aus[AU_INDEX["AU45"]] = max(aus[AU_INDEX["AU45"]], rng.uniform(1.0, 5.0))
        else:
            k = rng.integers(N_AU)
            aus[k] = max(aus[k], rng.uniform(0.5, 2.0))
    return name, np.clip(aus, 0.0, AU_MAX).astype(np.float32)


def ease(t: np.ndarray) -> np.ndarray:
    """Ease-in(-out) curve 0 -> 1 on t in [0, 1]: slow onset, smooth arrival (smoothstep)."""
    t = np.clip(np.asarray(t, np.float32), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def video_sequence(aus_apex: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames, 17) float32 AU ramp from neutral (frame 0 = zeros) to aus_apex (last frame)."""
    apex = np.asarray(aus_apex, np.float32).reshape(N_AU)
    t = np.linspace(0.0, 1.0, n_frames, dtype=np.float32) if n_frames > 1 else np.ones(1, np.float32)
    return (ease(t)[:, None] * apex[None, :]).astype(np.float32)


def nearest_expression(aus: np.ndarray, neutral_below: float = 0.5) -> str:
    """The prototype whose AU profile points most nearly the way ``aus`` (17,) does (cosine);
    "neutral" when no AU reaches ``neutral_below``. For labelling figures."""
    aus = np.asarray(aus, np.float32)
    if aus.max(initial=0.0) < neutral_below:
        return "neutral"
    scores = {n: float(aus @ p / (np.linalg.norm(aus) * np.linalg.norm(p))) for n, p in PROTOTYPES.items() if n != "neutral"}
    return max(scores, key=scores.get)
