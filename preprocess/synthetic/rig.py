"""Sensor rig and calibration of the synthetic vehicle, laid out like KITTI-360's.

Frames: world is z-up (metres); the IMU/GPS pose frame is x forward, y left, z up, 0.9 m
above the road; camera 0 is OpenCV (x right, y down, z forward) 1.2 m ahead of the IMU,
pitched slightly down; the Velodyne is x forward, y left, z up, 0.8 m behind, 0.3 m to the
right of and 0.18 m above the camera. None of these frames coincide.
"""

from __future__ import annotations

import numpy as np

WIDTH, HEIGHT = 1408, 376
K = np.array([[552.554261, 0.0, 682.049453], [0.0, 552.554261, 238.769549], [0.0, 0.0, 1.0]])
R_RECT = np.array(
    [[0.999974, -0.007141, -0.000089], [0.007141, 0.999969, -0.003247], [0.000112, 0.003247, 0.999995]]
)
IMU_HEIGHT = 0.9
# OpenCV camera axes expressed in a forward-left-up frame
CAM_AXES_IN_FLU = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
VELO_ELEVATIONS_DEG = np.linspace(2.0, -24.8, 64)
VELO_AZIMUTH_STEP_DEG = 0.3
VELO_MAX_RANGE = 120.0


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rigid(R: np.ndarray, t) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = t
    return out


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """Nearest rotation; the dataset's R_rect is printed to 6 digits and is not exactly one."""
    U, _, Vt = np.linalg.svd(R)
    return U @ Vt


RECT_FROM_CAM = rigid(orthonormalize(R_RECT), np.zeros(3))
POSE_FROM_CAM = rigid(CAM_AXES_IN_FLU @ rot_x(0.026) @ rot_y(0.004), [1.2, 0.0, 0.7])
VELO_FROM_CAM = rigid(rot_z(0.006) @ CAM_AXES_IN_FLU @ rot_x(-0.01), [0.8, 0.3, -0.18])
POSE_FROM_VELO = POSE_FROM_CAM @ np.linalg.inv(VELO_FROM_CAM)
POSE_FROM_RECT = POSE_FROM_CAM @ np.linalg.inv(RECT_FROM_CAM)


def velodyne_directions() -> np.ndarray:
    """Unit ray directions (N,3) of one sweep in the Velodyne frame."""
    elev = np.deg2rad(VELO_ELEVATIONS_DEG)[:, None]
    azim = np.deg2rad(np.arange(0.0, 360.0, VELO_AZIMUTH_STEP_DEG))[None, :]
    parts = np.broadcast_arrays(np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev))
    dirs = np.stack(parts, axis=-1)
    return dirs.reshape(-1, 3)


def pixel_directions() -> np.ndarray:
    """Rays (H*W,3) through pixel centres of the rectified camera, scaled to z = 1, so the
    ray parameter at a hit is the z-depth."""
    jj, ii = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    pix = np.stack([jj.ravel(), ii.ravel(), np.ones(jj.size)], axis=-1)
    return pix @ np.linalg.inv(K).T
