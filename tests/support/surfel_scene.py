"""The small static-cloud scene the surfel and planar-patch tests render: a wall in front of a
larger wall, on a ground plane, plus a few isolated points, and three views of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess.planar_patches import build_cell_patches
from preprocess.sources.kitti360.static_ply import Window, static_vertex_dtype, write_static_ply

SHAPE = (48, 64)
K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
FRONT_Z, BACK_Z, GROUND_Y = 4.0, 7.0, 1.5  # the walls' planes z = const, the ground's y = const


def jittered_plane(rng, origin, u, v, n_u, n_v, spacing):
    """Jittered samples of the parallelogram origin + a u + b v."""
    a, b = np.meshgrid(np.arange(n_u), np.arange(n_v))
    a = (a.ravel() + rng.uniform(-0.3, 0.3, a.size)) * spacing
    b = (b.ravel() + rng.uniform(-0.3, 0.3, b.size)) * spacing
    return np.asarray(origin) + a[:, None] * np.asarray(u) + b[:, None] * np.asarray(v)


def write_window(folder: Path, points: np.ndarray) -> Window:
    """The points as a static window of frames 0..9, every point labelled building."""
    vertices = np.zeros(len(points), static_vertex_dtype())
    vertices["x"], vertices["y"], vertices["z"] = points.T
    vertices["semantic"] = 11
    path = folder / "0000000000_0000000009.ply"
    write_static_ply(path, vertices)
    return Window(path, 0, 9)


def scene_window(folder: Path) -> Window:
    """A wall in front of a larger wall, on a ground plane, plus a few isolated points."""
    rng = np.random.default_rng(3)
    parts = [
        jittered_plane(rng, (-1.0, -0.8, FRONT_Z), (1, 0, 0), (0, 1, 0), 30, 24, 0.05),  # front wall
        jittered_plane(rng, (-3.0, -2.0, BACK_Z), (1, 0, 0), (0, 1, 0), 60, 55, 0.1),  # back wall
        jittered_plane(rng, (-3.0, GROUND_Y, 2.0), (1, 0, 0), (0, 0, 1), 60, 50, 0.1),  # ground, at a slant
        rng.uniform(-2, 2, (5, 3)) + (0, 0, 9),
    ]
    return write_window(folder, np.concatenate(parts))


def views() -> list[np.ndarray]:
    """World-from-camera poses: the identity and two views from the side and from above."""
    poses = [np.eye(4)]
    for yaw, pitch, shift in ((0.3, 0.0, (0.8, 0.0, 0.5)), (-0.2, 0.25, (-0.5, 0.6, 0.0))):
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        rot = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]]) @ np.array(
            [[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]
        )
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rot, shift
        poses.append(pose)
    return poses


def build_every_patch(prepared) -> None:
    """Rasterise every cell's patches of a prepared window now, as if each cell was drawn."""
    for cell in range(len(prepared.fine[4])):
        build_cell_patches(cell, prepared.fine, prepared.patches)
