"""Alignment of predictions to ground truth.

VGGT predicts geometry only up to a similarity, so every metric is computed after an
explicit alignment, and each alignment carries a small record naming it so the number
can be reported next to the alignment that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np

DepthAlignMode = Literal["window", "window_median", "frame_median", "scale_shift", "none"]
DEPTH_ALIGN_MODES: tuple[str, ...] = get_args(DepthAlignMode)


class Sim3(NamedTuple):
    """x_dst = s * R @ x_src + t; unpacks as ``s, R, t``."""

    s: float
    R: np.ndarray
    t: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points [..., 3]."""
        return self.s * points @ self.R.T + self.t

    def record(self, name: str) -> dict[str, object]:
        """Flat description for result tables (which alignment, and its scale)."""
        return {"align": name, "align_scale": float(self.s)}


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Sim3:
    """Least-squares Sim(3) (or SE(3) without scale) taking ``src`` [N,3] onto ``dst`` [N,3].

    Umeyama (1991), closed form via SVD of the cross-covariance with the reflection fix.
    A source without spread has no defined scale; it then gets s = 1 rather than inf/NaN.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 2:
        raise ValueError(f"need matching [N>=2, 3] point sets, got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    xs, xd = src - mu_src, dst - mu_dst
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        sign[2] = -1.0
    R = (U * sign) @ Vt
    var_src = float((xs**2).sum() / len(src))
    s = float((D * sign).sum() / var_src) if with_scale and var_src > 1e-24 else 1.0
    t = mu_dst - s * R @ mu_src
    return Sim3(s, R, t)


def align_points(
    pred: np.ndarray,
    gt: np.ndarray,
    with_scale: bool = True,
    max_points: int | None = 200_000,
    seed: int = 0,
) -> Sim3:
    """Umeyama on corresponding points pred/gt [N,3]; subsampled (fixed seed) for speed."""
    if max_points is not None and len(pred) > max_points:
        keep = np.random.default_rng(seed).choice(len(pred), max_points, replace=False)
        pred, gt = pred[keep], gt[keep]
    return umeyama(pred, gt, with_scale=with_scale)


def _finite_median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


@dataclass(frozen=True)
class DepthAlignment:
    """Per-frame scales [S] (and, for ``scale_shift``, shifts [S]) applied to predicted depth,
    and the mode that produced them.

    Frames without enough valid pixels get NaN (no evidence), which only touches pixels that
    no metric reads.
    """

    mode: str
    scales: np.ndarray
    shifts: np.ndarray | None = None

    def apply(self, pred: np.ndarray) -> np.ndarray:
        """Aligned prediction [S,H,W]: scale * pred (+ shift)."""
        aligned = pred * self.scales[:, None, None]
        return aligned if self.shifts is None else aligned + self.shifts[:, None, None]

    def record(self) -> dict[str, object]:
        """Flat description for result tables; medians over frames (the window's value for window
        modes). The shift, in metres, is only recorded by the mode that fits one."""
        record: dict[str, object] = {"align": self.mode, "align_scale": _finite_median(self.scales)}
        if self.shifts is not None:
            record["align_shift"] = _finite_median(self.shifts)
        return record


def _ratio_median(ratios: np.ndarray) -> float:
    return float(np.median(ratios)) if ratios.size else float("nan")


def _scale_and_shift(p: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """Least-squares (s, t) minimising sum (s p + t - g)^2; NaN without two distinct predictions."""
    if p.size < 2:
        return float("nan"), float("nan")
    p_mean, g_mean = p.mean(), g.mean()
    p_c = p - p_mean
    denom = float(p_c @ p_c)
    if denom <= 1e-12 * max(float(p_mean) ** 2, 1e-300) * p.size:
        return float("nan"), float("nan")
    s = float(p_c @ (g - g_mean)) / denom
    return s, float(g_mean - s * p_mean)


def fit_depth_scale(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, mode: DepthAlignMode = "window"
) -> DepthAlignment:
    """Scale(s) s minimising the mismatch of s * pred to gt on valid pixels.

    - ``window``: one least-squares scale for all frames, s = sum(p g) / sum(p^2). VGGT's frames
      share one scale, so per-frame scale drift stays visible as error.
    - ``window_median``: one robust scale, the median of gt/pred over the window's pixels.
    - ``frame_median``: one median scale per frame (hides scale drift between frames).
    - ``scale_shift``: per frame, the least-squares scale and shift (pred * s + t), as in
      affine-invariant depth benchmarks; hides drift and an offset.
    - ``none``: s = 1 (for metric-scale predictions).
    """
    if mode not in DEPTH_ALIGN_MODES:
        raise ValueError(f"unknown depth alignment {mode!r}; choose from {DEPTH_ALIGN_MODES}")
    n_frames = pred.shape[0]
    ok = valid & (pred > 0)
    if mode == "none":
        scale = np.ones(n_frames)
    elif mode == "window":
        p, g = pred[ok].astype(np.float64), gt[ok].astype(np.float64)
        denom = float(p @ p)
        scale = np.full(n_frames, float(p @ g) / denom if denom > 0 else np.nan)
    elif mode == "window_median":
        scale = np.full(n_frames, _ratio_median(gt[ok] / pred[ok]))
    elif mode == "scale_shift":
        fits = [
            _scale_and_shift(pred[i][ok[i]].astype(np.float64), gt[i][ok[i]].astype(np.float64))
            for i in range(n_frames)
        ]
        scales, shifts = (np.array(v, dtype=np.float64).reshape(n_frames) for v in zip(*fits, strict=True))
        return DepthAlignment(mode, scales, shifts)
    else:
        scale = np.array([_ratio_median(gt[i][ok[i]] / pred[i][ok[i]]) for i in range(n_frames)])
    return DepthAlignment(mode, scale.astype(np.float64))
