"""KITTI-360-style fused static point clouds of the synthetic street.

Every face of every static box (backs, roofs, bottoms, the upper facades no Velodyne beam
reaches) and a strip of ground are sampled on a jittered grid of `spacing` metres. Windows
cover runs of frames and hold the points near the path those frames drive (as KITTI-360's
windows hold what the car scanned there); two windows per sequence, overlapping by about 10 m.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..sources.kitti360.static_ply import static_vertex_dtype, write_static_ply
from .scene import METRES_PER_FRAME, ROAD, Boxes, Street

GROUND_HALF_WIDTH = 35.0  # metres either side of the path
BEHIND, AHEAD = 30.0, 60.0  # metres of street a window holds before its first / after its last frame
WINDOW_OVERLAP = 10.0  # metres of driving two consecutive windows share


def _face_grid(extent_u: float, extent_w: float, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """(M, 2) jittered cell centres covering [-extent_u, extent_u] x [-extent_w, extent_w]."""
    nu, nw = max(1, int(np.ceil(2 * extent_u / spacing))), max(1, int(np.ceil(2 * extent_w / spacing)))
    u = (np.arange(nu) + 0.5) / nu * 2 * extent_u - extent_u
    w = (np.arange(nw) + 0.5) / nw * 2 * extent_w - extent_w
    uu, ww = np.meshgrid(u, w, indexing="ij")
    jitter = rng.uniform(-0.2, 0.2, (uu.size, 2)) * [2 * extent_u / nu, 2 * extent_w / nw]
    return np.column_stack([uu.ravel(), ww.ravel()]) + jitter


def box_surface_points(
    boxes: Boxes, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) on all six faces of every box, and the box index of each."""
    points, owner = [], []
    for k in range(len(boxes)):
        half = boxes.halves[k]
        c, s = np.cos(boxes.yaws[k]), np.sin(boxes.yaws[k])
        for axis in range(3):
            u, w = [a for a in range(3) if a != axis]
            grid = _face_grid(half[u], half[w], spacing, rng)
            for sign in (-1.0, 1.0):
                local = np.zeros((len(grid), 3))
                local[:, axis] = sign * half[axis]
                local[:, u], local[:, w] = grid[:, 0], grid[:, 1]
                world = np.column_stack(
                    [c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]]
                )
                points.append(world + boxes.centres[k])
                owner.append(np.full(len(grid), k))
    return np.concatenate(points), np.concatenate(owner)


def arc_length(street: Street, xy: np.ndarray) -> np.ndarray:
    """Arc length along the path of the point nearest to each world xy (the path is a circle arc)."""
    k = street.path.curvature
    if abs(k) < 1e-9:
        return xy[:, 0].copy()
    return np.arctan2(k * xy[:, 0], 1.0 - k * xy[:, 1]) / k


def street_cloud(street: Street, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Every static surface of the street as a structured vertex array in the KITTI-360 layout."""
    box_points, owner = box_surface_points(street.static, spacing, rng)
    s_lo, s_hi = -BEHIND - 10.0, street.length
    s = np.arange(s_lo, s_hi, spacing) + spacing / 2
    lateral = np.arange(-GROUND_HALF_WIDTH, GROUND_HALF_WIDTH, spacing) + spacing / 2
    ss, ll = np.meshgrid(s, lateral, indexing="ij")
    ss = ss.ravel() + rng.uniform(-0.2, 0.2, ss.size) * spacing
    ll = ll.ravel() + rng.uniform(-0.2, 0.2, ll.size) * spacing
    ground = np.column_stack([street.path.point(ss, ll), np.zeros(ss.size)])
    vertices = np.zeros(len(box_points) + len(ground), dtype=static_vertex_dtype())
    xyz = np.concatenate([box_points, ground])
    for i, name in enumerate("xyz"):
        vertices[name] = xyz[:, i]
    colours = np.concatenate([street.static.colours[owner], np.full((len(ground), 3), 0.33)])
    for i, name in enumerate(("red", "green", "blue")):
        vertices[name] = np.round(colours[:, i] * 255)
    vertices["semantic"] = np.concatenate([street.static.labels[owner], np.full(len(ground), ROAD)])
    vertices["instance"] = np.concatenate([owner + 1, np.zeros(len(ground), int)])
    vertices["visible"] = 1
    vertices["confidence"] = 1.0
    return vertices


def window_ranges(frames: int) -> list[tuple[int, int]]:
    """Two windows over the sequence's frames that share WINDOW_OVERLAP metres of driving, as
    KITTI-360's consecutive windows do (at most a third of a short sequence)."""
    if frames < 4:
        return [(0, frames - 1)]
    overlap = max(1, min(round(WINDOW_OVERLAP / METRES_PER_FRAME), frames // 3))
    first_end = (frames - 1 + overlap) // 2
    return [(0, first_end), (first_end - overlap + 1, frames - 1)]


def write_static_windows(folder: Path, street: Street, frames: int, spacing: float, seed: int) -> list[Path]:
    """Write the sequence's windows: each holds the street from BEHIND metres before its first
    frame to AHEAD metres after its last."""
    folder.mkdir(parents=True, exist_ok=True)
    cloud = street_cloud(street, spacing, np.random.default_rng(seed))
    along = arc_length(street, np.column_stack([cloud["x"], cloud["y"]]).astype(np.float64))
    paths = []
    for start, end in window_ranges(frames):
        lo, hi = start * METRES_PER_FRAME - BEHIND, end * METRES_PER_FRAME + AHEAD
        path = folder / f"{start:010d}_{end:010d}.ply"
        write_static_ply(path, cloud[(along >= lo) & (along <= hi)])
        paths.append(path)
    return paths
