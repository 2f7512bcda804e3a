"""Plain-NumPy reference of the KITTI-360 depth pipeline, frame by frame.

It re-reads and re-registers all 2N+1 sweeps for every frame and uses only vectorized
NumPy (no Numba, no sliding cache of sweeps). It exists as an independent cross-check of the
optimized kernels in tests and as the baseline that `scripts/bench_build.py` measures.
"""

from __future__ import annotations

import numpy as np

from preprocess.kernels import label_lut
from preprocess.sources.kitti360.reader import Sequence
from preprocess.sources.kitti360.sweeps import DepthSettings
from shards import ImageSize


def _project(points_world: np.ndarray, cam_from_world: np.ndarray, K: np.ndarray, min_depth: float):
    cam = points_world @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    z = cam[:, 2]
    ok = z > min_depth
    zs = np.where(ok, z, 1.0)
    u = K[0, 0] * cam[:, 0] / zs + K[0, 1] * cam[:, 1] / zs + K[0, 2]
    v = K[1, 1] * cam[:, 1] / zs + K[1, 2]
    return np.floor(v + 0.5).astype(np.int64), np.floor(u + 0.5).astype(np.int64), z, ok


def _label_at(rows, cols, ok, labels):
    h, w = labels.shape
    inside = ok & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out = np.full(rows.shape, -1, dtype=np.int64)
    out[inside] = labels[rows[inside], cols[inside]]
    return out


def _occluded_mask(depth: np.ndarray, radius: int, rel_tol: float) -> np.ndarray:
    """Same rule as kernels.remove_occluded, computed with shifted copies of the image."""
    h, w = depth.shape
    padded = np.pad(depth, radius)
    limit = depth / (1.0 + rel_tol)
    flags = {k: np.zeros((h, w), bool) for k in ("l", "r", "u", "d", "ul", "dr", "ur", "dl")}
    for di in range(-radius, radius + 1):
        for dj in range(-radius, radius + 1):
            if di == 0 and dj == 0:
                continue
            q = padded[radius + di : radius + di + h, radius + dj : radius + dj + w]
            nearer = (q > 0) & (q < limit)
            for key, cond in (
                ("l", dj < 0), ("r", dj > 0), ("u", di < 0), ("d", di > 0),
                ("ul", di < 0 and dj < 0), ("dr", di > 0 and dj > 0),
                ("ur", di < 0 and dj > 0), ("dl", di > 0 and dj < 0),
            ):  # fmt: skip
                if cond:
                    flags[key] |= nearer
    f = flags
    enclosed = (f["l"] & f["r"]) | (f["u"] & f["d"]) | (f["ul"] & f["dr"]) | (f["ur"] & f["dl"])
    return enclosed & (depth > 0)


def reference_depth(
    seq: Sequence, centre: int, K: np.ndarray, size: ImageSize, settings: DepthSettings
) -> np.ndarray:
    """Depth of one frame, recomputed from scratch (same rules as SweepAccumulator.depth_for)."""
    height, width = size
    poses = seq.world_from_rect
    dynamic = label_lut(settings.dynamic_labels)
    centre_labels = seq.read_semantic(centre)
    rect_from_world = np.linalg.inv(poses[centre])
    depth = np.full(height * width, np.inf)
    n = settings.accumulate
    for frame in [centre] + [f for f in range(centre - n, centre + n + 1) if f != centre and f in poses]:
        try:
            velo = seq.read_sweep(frame).points.astype(np.float64)
        except Exception:  # noqa: BLE001 - same policy as the pipeline: unusable neighbours are dropped
            continue
        to_world = poses[frame] @ seq.calib.rect_from_velo
        world = velo @ to_world[:3, :3].T + to_world[:3, 3]
        keep = np.ones(len(world), bool)
        if frame != centre:
            own = seq.read_semantic(frame)
            if own is not None:
                r, c, _, ok = _project(world, np.linalg.inv(poses[frame]), seq.calib.K, 0.0)
                label = _label_at(r, c, ok, own)
                keep &= (label >= 0) & ~dynamic[np.clip(label, 0, 255)]
            if centre_labels is not None:
                r, c, _, ok = _project(world, rect_from_world, seq.calib.K, 0.0)
                label = _label_at(r, c, ok, centre_labels)
                keep &= ~((label >= 0) & dynamic[np.clip(label, 0, 255)])
        rows, cols, z, ok = _project(world, rect_from_world, K, settings.min_depth)
        ok &= keep & (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        np.minimum.at(depth, rows[ok] * width + cols[ok], z[ok])
    depth = np.where(np.isfinite(depth), depth, 0.0).reshape(height, width).astype(np.float32)
    depth[depth > settings.max_depth] = 0.0
    radius = settings.occlusion_radius(width / seq.calib.size.width)
    depth[_occluded_mask(depth, radius, settings.occlusion_rel_tol)] = 0
    return depth
