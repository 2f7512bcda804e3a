"""A COLMAP text model of the synthetic KITTI-360 scene with exact geometry, so the COLMAP
path is checked against ground truth: a PINHOLE camera from P_rect (principal point +0.5,
COLMAP's convention), poses from the GT cam0_to_world, and 3D points at pixel centres of
GT depth whose tracks list every image that sees them (checked against its GT depth)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from preprocess.sources.colmap.reader import PIXEL_CENTRE
from preprocess.sources.kitti360.reader import read_calibration
from preprocess.synthetic import SynthDataset, load_gt_depth
from shards import ImageSize

VISIBLE_REL_TOL = 0.02  # GT depth at the nearest pixel vs the point's depth


@dataclass(frozen=True)
class SyntheticModel:
    model: Path
    images: Path
    frames: list[int]  # synthetic frame of each image, in image-name order
    cam_from_world: list[np.ndarray]
    K: np.ndarray  # OpenCV convention
    points: np.ndarray  # (N, 3) world
    tracks: list[list[tuple[int, float, float]]]  # per point: (image index, x, y) in OpenCV pixels


def _read_gt_poses(gt_root: Path, sequence: str) -> dict[int, np.ndarray]:
    poses = {}
    for line in (gt_root / sequence / "cam0_to_world.txt").read_text().splitlines():
        values = np.array(line.split(), dtype=np.float64)
        poses[int(values[0])] = values[1:].reshape(4, 4)
    return poses


def _project(points: np.ndarray, cam_from_world: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = points @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    z = cam[:, 2]
    uv = cam[:, :2] / np.where(z > 0, z, 1.0)[:, None] * np.diag(K)[:2] + K[:2, 2]
    return uv, z


def synthetic_colmap_model(
    data: SynthDataset, sequence: str, frames: list[int], sources: list[int], stride: int, out: Path
) -> SyntheticModel:
    """Write `out/cameras.txt, images.txt, points3D.txt` for `frames` of `sequence`, with
    points sampled every `stride` pixels from the GT depth of the `sources` frames."""
    calib = read_calibration(data.root)
    K, (height, width) = calib.K, calib.size
    poses = _read_gt_poses(data.gt_root, sequence)
    cam_from_world = [np.linalg.inv(poses[f]) for f in frames]
    depths = [load_gt_depth(data.gt_root, sequence, f) for f in frames]
    chunks = []
    for source in sources:
        k = frames.index(source)
        ii, jj = np.mgrid[0:height:stride, 0:width:stride]
        z = depths[k][ii, jj].astype(np.float64)
        ii, jj, z = ii[z > 0], jj[z > 0], z[z > 0]
        cam = np.stack([(jj - K[0, 2]) / K[0, 0] * z, (ii - K[1, 2]) / K[1, 1] * z, z], axis=1)
        world_from_cam = poses[frames[k]]
        chunks.append(cam @ world_from_cam[:3, :3].T + world_from_cam[:3, 3])
    points = np.concatenate(chunks)
    tracks: list[list[tuple[int, float, float]]] = [[] for _ in range(len(points))]
    for k, (T, gt) in enumerate(zip(cam_from_world, depths, strict=True)):
        uv, z = _project(points, T, K)
        j, i = np.floor(uv[:, 0] + 0.5).astype(int), np.floor(uv[:, 1] + 0.5).astype(int)
        inside = (z > 0) & (i >= 0) & (i < height) & (j >= 0) & (j < width)
        seen = np.zeros(len(points), bool)
        seen[inside] = np.abs(gt[i[inside], j[inside]] - z[inside]) <= VISIBLE_REL_TOL * z[inside]
        for n in np.flatnonzero(seen):
            tracks[n].append((k, float(uv[n, 0]), float(uv[n, 1])))
    _write_text(out, K, calib.size, frames, cam_from_world, points, tracks)
    images = data.root / "data_2d_raw" / sequence / "image_00" / "data_rect"
    return SyntheticModel(out, images, list(frames), cam_from_world, K, points, tracks)


def _write_text(
    out: Path,
    K: np.ndarray,
    size: ImageSize,
    frames: list[int],
    cam_from_world: list[np.ndarray],
    points: np.ndarray,
    tracks: list[list[tuple[int, float, float]]],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2] + PIXEL_CENTRE, K[1, 2] + PIXEL_CENTRE
    (out / "cameras.txt").write_text(
        f"1 PINHOLE {size.width} {size.height} {fx:.17g} {fy:.17g} {cx:.17g} {cy:.17g}\n"
    )
    observations: list[list[str]] = [[] for _ in frames]
    point_lines = []
    for n, (xyz, track) in enumerate(zip(points, tracks, strict=True)):
        elements = []
        for k, u, v in track:
            elements.append(f"{k + 1} {len(observations[k])}")
            observations[k].append(f"{u + PIXEL_CENTRE:.17g} {v + PIXEL_CENTRE:.17g} {n + 1}")
        point_lines.append(
            f"{n + 1} {xyz[0]:.17g} {xyz[1]:.17g} {xyz[2]:.17g} 128 128 128 0.0 {' '.join(elements)}"
        )
    image_lines = []
    for k, (frame, T) in enumerate(zip(frames, cam_from_world, strict=True)):
        qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()
        pose = " ".join(f"{v:.17g}" for v in (qw, qx, qy, qz, *T[:3, 3]))
        image_lines.append(f"{k + 1} {pose} 1 {frame:010d}.png")
        image_lines.append(" ".join(observations[k]))
    (out / "images.txt").write_text("\n".join(image_lines) + "\n")
    (out / "points3D.txt").write_text("\n".join(point_lines) + "\n")
