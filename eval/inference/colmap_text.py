"""A COLMAP text model (cameras.txt, images.txt, points3D.txt) of predicted cameras and points.

COLMAP puts pixel centres at +0.5 (its image origin is the corner of the first pixel, OpenCV's
the centre), so principal points and 2D observations are shifted by half a pixel on write.
Each image gets its own PINHOLE camera, since the model predicts intrinsics per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

COLMAP_PIXEL_CENTRE = 0.5  # COLMAP x = OpenCV x + 0.5


@dataclass
class ColmapImage:
    name: str
    size_hw: tuple[int, int]
    intrinsics: np.ndarray  # 3x3, OpenCV pixel centres
    cam_from_world: np.ndarray  # 4x4


@dataclass
class ColmapPoints:
    """Points each observed once: in image `image[n]` (index into the image list) at OpenCV
    pixel coordinates `xy[n]`."""

    xyz: np.ndarray  # [N,3]
    rgb: np.ndarray  # [N,3] uint8
    image: np.ndarray  # [N] int
    xy: np.ndarray  # [N,2]


def _number(value: float) -> str:
    return f"{float(value):.9g}"


def write_colmap_text(folder: Path, images: list[ColmapImage], points: ColmapPoints) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cameras = ["# CAMERA_ID MODEL WIDTH HEIGHT fx fy cx cy (COLMAP pixel centres: +0.5)"]
    for k, image in enumerate(images, start=1):
        K = image.intrinsics
        params = (K[0, 0], K[1, 1], K[0, 2] + COLMAP_PIXEL_CENTRE, K[1, 2] + COLMAP_PIXEL_CENTRE)
        height, width = image.size_hw
        cameras.append(f"{k} PINHOLE {width} {height} {' '.join(map(_number, params))}")
    observations: list[list[str]] = [[] for _ in images]
    point_lines = ["# POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    for n in range(len(points.xyz)):
        k = int(points.image[n])
        x, y = points.xy[n] + COLMAP_PIXEL_CENTRE
        element = f"{k + 1} {len(observations[k])}"
        observations[k].append(f"{_number(x)} {_number(y)} {n + 1}")
        xyz = " ".join(map(_number, points.xyz[n]))
        rgb = " ".join(str(int(c)) for c in points.rgb[n])
        point_lines.append(f"{n + 1} {xyz} {rgb} 0 {element}")
    image_lines = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then POINTS2D[] as (X, Y, POINT3D_ID)"]
    for k, image in enumerate(images):
        qx, qy, qz, qw = Rotation.from_matrix(image.cam_from_world[:3, :3]).as_quat()
        pose = " ".join(map(_number, (qw, qx, qy, qz, *image.cam_from_world[:3, 3])))
        image_lines += [f"{k + 1} {pose} {k + 1} {image.name}", " ".join(observations[k])]
    (folder / "cameras.txt").write_text("\n".join(cameras) + "\n")
    (folder / "images.txt").write_text("\n".join(image_lines) + "\n")
    (folder / "points3D.txt").write_text("\n".join(point_lines) + "\n")
