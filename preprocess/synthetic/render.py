"""Per-frame rendering of the synthetic street: RGB, labels, exact z-depth and the LiDAR sweep."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rig
from .raycast import cast_rays
from .scene import ROAD, SKY, Boxes

LIGHT = np.array([0.35, 0.5, 0.8]) / np.linalg.norm([0.35, 0.5, 0.8])
MAX_T = 400.0


@dataclass
class FrameRender:
    rgb: np.ndarray  # (H,W,3) uint8
    labels: np.ndarray  # (H,W) uint8
    depth: np.ndarray  # (H,W) float32 z-depth, 0 = sky
    dynamic: np.ndarray  # (H,W) bool
    sweep: np.ndarray  # (N,4) float32 x,y,z,reflectance in the Velodyne frame


def _hash_noise(cells: np.ndarray) -> np.ndarray:
    """Deterministic per-cell value in [0,1) for texture."""
    v = np.sin(cells @ np.array([12.9898, 78.233, 37.719])) * 43758.5453
    return v - np.floor(v)


def _shade(points, obj, axis, dirs, boxes: Boxes) -> np.ndarray:
    """Flat colours with facade windows, texture noise and Lambert shading."""
    n = len(points)
    colour = np.full((n, 3), 0.33)
    normal = np.tile([0.0, 0.0, 1.0], (n, 1))
    is_box = obj < len(boxes)
    k = obj[is_box]
    c, s = np.cos(boxes.yaws[k]), np.sin(boxes.yaws[k])
    rel = points[is_box] - boxes.centres[k]
    local = np.column_stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]])
    ax = axis[is_box]
    local_dir = np.column_stack(
        [c * dirs[is_box, 0] + s * dirs[is_box, 1], -s * dirs[is_box, 0] + c * dirs[is_box, 1]]
    )
    n_local = np.zeros((len(k), 3))
    n_local[np.arange(len(k)), ax] = 1.0
    horiz = ax < 2
    sign = -np.sign(local_dir[np.arange(len(k)), np.minimum(ax, 1)])
    n_local[horiz] *= sign[horiz, None]
    normal[is_box] = np.column_stack(
        [c * n_local[:, 0] - s * n_local[:, 1], s * n_local[:, 0] + c * n_local[:, 1], n_local[:, 2]]
    )
    colour[is_box] = boxes.colours[k]
    # windows on vertical faces of buildings: a 3 m x 3.2 m grid of dark panes
    along = np.where(ax == 0, local[:, 1], local[:, 0])
    height = local[:, 2] + boxes.halves[k, 2]
    pane = (np.mod(along / 3.0, 1.0) > 0.3) & (np.mod(along / 3.0, 1.0) < 0.7)
    pane &= (np.mod(height / 3.2, 1.0) > 0.35) & (np.mod(height / 3.2, 1.0) < 0.8) & (height > 1.5)
    pane &= horiz & (boxes.labels[k] == 11)
    colour[np.flatnonzero(is_box)[pane]] = [0.12, 0.16, 0.22]
    noise = _hash_noise(np.floor(points * 6.0))
    lambert = 0.55 + 0.45 * np.clip(normal @ LIGHT, 0.0, 1.0)
    return np.clip(colour * lambert[:, None] * (0.85 + 0.3 * noise[:, None]), 0, 1)


def _corners(boxes: Boxes) -> np.ndarray:
    """World corners (M,8,3) of every box."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    local = signs[None] * boxes.halves[:, None, :]
    c, s = np.cos(boxes.yaws)[:, None], np.sin(boxes.yaws)[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes.centres[:, None, :]


def _visible_boxes(world_from_rect: np.ndarray, boxes: Boxes) -> np.ndarray:
    """Indices of boxes that may appear in the image (conservative frustum test), so the
    ray caster only tests those."""
    rect_from_world = np.linalg.inv(world_from_rect)
    cam = _corners(boxes) @ rect_from_world[:3, :3].T + rect_from_world[:3, 3]
    z = cam[..., 2]
    in_front = z > 0.05
    zs = np.where(in_front, z, 1.0)
    u = rig.K[0, 0] * cam[..., 0] / zs + rig.K[0, 2]
    v = rig.K[1, 1] * cam[..., 1] / zs + rig.K[1, 2]
    straddles = in_front.any(1) & ~in_front.all(1)  # crosses the image plane: keep
    overlap = (u.max(1) >= -1) & (u.min(1) <= rig.WIDTH) & (v.max(1) >= -1) & (v.min(1) <= rig.HEIGHT)
    return np.flatnonzero(straddles | (in_front.all(1) & overlap))


def render_camera(world_from_rect: np.ndarray, boxes: Boxes, moving: int) -> tuple:
    dirs = rig.pixel_directions() @ world_from_rect[:3, :3].T
    origin = world_from_rect[None, :3, 3]
    keep = _visible_boxes(world_from_rect, boxes)
    t, sub, axis = cast_rays(origin, dirs, boxes.centres[keep], boxes.yaws[keep], boxes.halves[keep], MAX_T)
    obj = np.where(sub < 0, sub, np.where(sub == len(keep), len(boxes), keep[np.minimum(sub, len(keep) - 1)]))
    hit = obj >= 0
    labels = np.full(len(t), SKY, dtype=np.uint8)
    labels[hit] = np.where(obj[hit] < len(boxes), boxes.labels[np.minimum(obj[hit], len(boxes) - 1)], ROAD)
    rows = np.repeat(np.arange(rig.HEIGHT), rig.WIDTH)
    sky = np.column_stack(
        [0.55 + 0.25 * rows / rig.HEIGHT, 0.7 + 0.2 * rows / rig.HEIGHT, np.full(len(t), 0.95)]
    )
    rgb = sky
    points = origin + t[hit, None] * dirs[hit]
    rgb[hit] = _shade(points, obj[hit], axis[hit], dirs[hit], boxes)
    depth = np.where(hit, t, 0.0).astype(np.float32)
    shape = (rig.HEIGHT, rig.WIDTH)
    return (
        (rgb.reshape(*shape, 3) * 255).round().astype(np.uint8),
        labels.reshape(shape),
        depth.reshape(shape),
        (obj == moving).reshape(shape),
    )


def render_sweep(world_from_velo: np.ndarray, boxes: Boxes, noise_sigma: float, rng: np.random.Generator):
    dirs_velo = rig.velodyne_directions()
    dirs = dirs_velo @ world_from_velo[:3, :3].T
    t, obj, _ = cast_rays(
        world_from_velo[None, :3, 3], dirs, boxes.centres, boxes.yaws, boxes.halves, rig.VELO_MAX_RANGE
    )
    hit = obj >= 0
    rng_noise = rng.normal(0.0, noise_sigma, hit.sum()) if noise_sigma > 0 else 0.0
    points = dirs_velo[hit] * (t[hit] + rng_noise)[:, None]
    reflect = rng.uniform(0.0, 1.0, hit.sum())
    return np.column_stack([points, reflect]).astype(np.float32)


def render_frame(
    world_from_pose: np.ndarray, boxes: Boxes, moving: int, noise_sigma: float, rng: np.random.Generator
) -> FrameRender:
    world_from_rect = world_from_pose @ rig.POSE_FROM_RECT
    rgb, labels, depth, dynamic = render_camera(world_from_rect, boxes, moving)
    sweep = render_sweep(world_from_pose @ rig.POSE_FROM_VELO, boxes, noise_sigma, rng)
    return FrameRender(rgb, labels, depth, dynamic, sweep)
