"""Labels without rendering: each AU a renewal process of episodes (onset, apex, offset) at its base rate, AUs that
ride on others, unknown stretches."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from aubench_cli.data.synth.aus import AU_SPECS

# ---------------------------------------------------------------------------------------------------------------
# Labels: AU episodes with onset, apex and offset
# ---------------------------------------------------------------------------------------------------------------

# Intensity at or above which an AU counts as present (the field's convention, and the protocol's default).
PRESENT_AT = 2
# Apex intensity distribution: some episodes stay at a trace (1) and never count as present.
APEX_LEVELS = np.array([1, 2, 3, 4, 5], np.float64)
APEX_PROBS = np.array([0.10, 0.25, 0.25, 0.20, 0.20])


@dataclass(frozen=True)
class Episode:
    start: int
    onset: int
    apex: int
    offset: int
    peak: float

    @property
    def length(self) -> int:
        return self.onset + self.apex + self.offset


def _draw_episode(rng: np.random.Generator, start: int, fps: float) -> Episode:
    # Short episodes (about a second in all): more of them for a given rate means more varied positives.
    ramp_lo = max(2, int(round(0.1 * fps)))
    ramp_hi = max(ramp_lo + 1, int(round(0.3 * fps)))
    apex_mean = max(2.0, 0.4 * fps)
    peak = float(np.clip(rng.choice(APEX_LEVELS, p=APEX_PROBS) + rng.uniform(-0.4, 0.4), 0.6, 5.0))
    return Episode(start, int(rng.integers(ramp_lo, ramp_hi)), int(rng.geometric(1.0 / apex_mean)),
                   int(rng.integers(ramp_lo, ramp_hi)), peak)


def _episode_profile(ep: Episode) -> np.ndarray:
    up = np.arange(1, ep.onset + 1) / (ep.onset + 1)
    down = np.arange(ep.offset, 0, -1) / (ep.offset + 1)
    return ep.peak * np.concatenate([up, np.ones(ep.apex), down])


@functools.lru_cache(maxsize=16)
def _episode_stats(fps: float) -> tuple[float, float]:
    """Mean length and mean number of present frames (intensity rounds to >= PRESENT_AT) of one episode."""
    rng = np.random.default_rng(12345)  # a fixed sample: the statistics must not depend on the run's seed
    lengths, present = [], []
    for _ in range(3000):
        ep = _draw_episode(rng, 0, fps)
        lengths.append(ep.length)
        present.append(int((np.round(_episode_profile(ep)) >= PRESENT_AT).sum()))
    return float(np.mean(lengths)), float(np.mean(present))


def _episodes(n: int, rate: float, rng: np.random.Generator, fps: float) -> list[Episode]:
    """A renewal process of episodes whose long-run fraction of present frames is ``rate``."""
    if rate <= 0 or n <= 0:
        return []
    mean_len, mean_present = _episode_stats(fps)
    mean_gap = max(1.0, mean_present / min(rate, 0.95) - mean_len)
    # Start at a random phase of the cycle so that videos do not all begin in a gap.
    t = -int(rng.integers(0, int(mean_len + mean_gap) + 1))
    out = []
    while True:
        t += int(rng.geometric(1.0 / mean_gap))
        if t >= n:
            return out
        ep = _draw_episode(rng, t, fps)
        if t + ep.length > 0:
            out.append(ep)
        t += ep.length


def _track(n: int, episodes: Iterable[Episode]) -> np.ndarray:
    track = np.zeros(n, np.float32)
    for ep in episodes:
        prof = _episode_profile(ep)
        lo, hi = max(ep.start, 0), min(ep.start + len(prof), n)
        if hi > lo:
            seg = prof[lo - ep.start : hi - ep.start]
            track[lo:hi] = np.maximum(track[lo:hi], seg)
    return track


@dataclass
class Labels:
    """Labels of one video: continuous intensities (frames x AUs, 0..5, what is rendered), integer intensities
    (0..5, what an intensity label file holds), and binary labels (1 / 0, -1 unknown)."""

    aus: list[str]
    intensity: np.ndarray  # float32 (F, K)
    unknown: np.ndarray  # bool (F, K)

    @property
    def level(self) -> np.ndarray:
        return np.round(self.intensity).astype(np.int8)

    @property
    def binary(self) -> np.ndarray:
        out = (self.level >= PRESENT_AT).astype(np.int8)
        out[self.unknown] = -1
        return out


def generate_labels(n_frames: int, aus: Sequence[str], rng: np.random.Generator, *, fps: float = 30.0,
                    rates: Mapping[str, float] | None = None, unknown_share: float = 0.01) -> Labels:
    """Labels of one video of ``n_frames`` frames, without rendering anything.

    Each AU is a renewal process of episodes at its base rate (``AU_SPECS[au].rate`` unless ``rates`` overrides
    it). An AU with a driver (AU06 <- AU12, AU02 <- AU01, AU26 <- AU25) also joins a fraction of the driver's
    episodes, slightly delayed; its independent rate is lowered so that its total rate stays as configured.
    About ``unknown_share`` of the labels are unknown, in stretches of 0.2-1 s placed at random per AU (an
    occluded face or a coder unsure of one AU).
    """
    rates = {name: (rates or {}).get(name, AU_SPECS[name].rate) for name in aus}
    episodes: dict[str, list[Episode]] = {}
    order = sorted(aus, key=lambda name: AU_SPECS[name].driver is not None)  # drivers first
    for name in order:
        spec = AU_SPECS[name]
        rate = rates[name]
        coupled: list[Episode] = []
        if spec.driver in episodes and spec.coupling > 0:
            driver_rate = rates[spec.driver]
            # Joined episodes cover most of the driver's present frames; what is left comes independently.
            joined = min(0.9, spec.coupling * driver_rate * 0.85)
            rate = max((rate - joined) / (1 - joined), rate * 0.15)
            for ep in episodes[spec.driver]:
                if rng.random() < spec.coupling:
                    delay = int(rng.integers(0, ep.onset + 1))
                    peak = float(np.clip(ep.peak + rng.uniform(-1.0, 0.5), 0.6, 5.0))
                    coupled.append(Episode(ep.start + delay, ep.onset, max(1, ep.apex - delay + int(rng.integers(
                        -2, 3))), ep.offset, peak))
        episodes[name] = _episodes(n_frames, rate, rng, fps) + coupled
    intensity = np.stack([_track(n_frames, episodes[name]) for name in aus], axis=1) if aus else np.zeros(
        (n_frames, 0), np.float32)
    unknown = np.zeros_like(intensity, dtype=bool)
    shortest, longest = max(1, int(0.2 * fps)), max(2, int(fps))
    for k in range(len(aus)):
        for _ in range(rng.poisson(unknown_share * n_frames / ((shortest + longest) / 2))):
            length = int(rng.integers(shortest, longest + 1))
            start = int(rng.integers(0, n_frames))
            unknown[start : start + length, k] = True
    return Labels(list(aus), intensity, unknown)


def _ensure_each_au_present(labels: list[Labels], rng: np.random.Generator, fps: float) -> None:
    """Give every AU at least one present episode per subject (in one of its videos).

    At the rare base rates (3-5 %) a short demo dataset would otherwise leave some subjects, and then whole
    subject-exclusive splits, without a single positive of an AU, which balanced batches cannot handle. Over long
    videos this changes nothing: every AU is present anyway.
    """
    for k in range(len(labels[0].aus) if labels else 0):
        if any((lab.binary[:, k] == 1).any() for lab in labels):
            continue
        lab = labels[int(rng.integers(len(labels)))]
        n = lab.intensity.shape[0]
        ep = _draw_episode(rng, 0, fps)
        ep = Episode(int(rng.integers(0, max(1, n - ep.length))), ep.onset, ep.apex, ep.offset,
                     float(rng.uniform(3.0, 5.0)))
        lab.intensity[:, k] = np.maximum(lab.intensity[:, k], _track(n, [ep]))
        lab.unknown[:, k] &= ~(np.round(lab.intensity[:, k]) >= PRESENT_AT)
