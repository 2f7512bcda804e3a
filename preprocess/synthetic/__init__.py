"""Synthetic KITTI-360: a street scene written in the exact KITTI-360 layout, with the exact
ground-truth z-depth of every camera frame beside it (outside the KITTI-360 tree).

The LiDAR sweep is treated as instantaneous at the frame time (no rolling motion), so the
only disagreements between sweep and image are parallax, occlusion and moving objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import rig
from .render import render_frame
from .scene import METRES_PER_FRAME, Street
from .static_cloud import write_static_windows

log = logging.getLogger(__name__)
SEQUENCE_IDS = (0, 2, 3, 4, 5, 6, 7, 9, 10)


@dataclass(frozen=True)
class SynthDataset:
    root: Path  # KITTI-360 root
    gt_root: Path  # ground_truth/<sequence>/...
    sequences: tuple[str, ...]


def _fmt(values: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(values, dtype=np.float64).ravel())


def _write_calibration(root: Path) -> None:
    calib = root / "calibration"
    calib.mkdir(parents=True, exist_ok=True)
    p0 = np.hstack([rig.K, np.zeros((3, 1))])
    p1 = p0.copy()
    p1[0, 3] = -rig.K[0, 0] * 0.6
    lines = []
    for cam, p in (("00", p0), ("01", p1)):
        lines += [
            f"S_{cam}: 1.392000e+03 5.120000e+02",
            f"K_{cam}: {_fmt(rig.K)}",
            f"D_{cam}: 0 0 0 0 0",
            f"R_{cam}: {_fmt(np.eye(3))}",
            f"T_{cam}: {_fmt(np.zeros(3))}",
            f"S_rect_{cam}: {rig.WIDTH:.6e} {rig.HEIGHT:.6e}",
            f"R_rect_{cam}: {_fmt(rig.RECT_FROM_CAM[:3, :3])}",
            f"P_rect_{cam}: {_fmt(p)}",
        ]
    (calib / "perspective.txt").write_text("calib_time: synthetic\n" + "\n".join(lines) + "\n")
    # image_01 sits 0.6 m along camera 0's +x axis (the baseline encoded in P_rect_01).
    cam0_from_cam1 = rig.rigid(np.eye(3), [0.6, 0.0, 0.0])
    cams = [rig.POSE_FROM_CAM, rig.POSE_FROM_CAM @ cam0_from_cam1, rig.POSE_FROM_CAM, rig.POSE_FROM_CAM]
    (calib / "calib_cam_to_pose.txt").write_text(
        "".join(f"image_{i:02d}: {_fmt(m[:3])}\n" for i, m in enumerate(cams))
    )
    (calib / "calib_cam_to_velo.txt").write_text(_fmt(rig.VELO_FROM_CAM[:3]) + "\n")


def _imu_pose(street: Street, frame: int, rng_wobble: np.ndarray) -> np.ndarray:
    """IMU -> world: on the path, heading along it, with small pitch/roll/yaw wobble."""
    s = frame * METRES_PER_FRAME + 0.1 * np.sin(0.7 * frame)
    xy = street.path.point(s)
    yaw = float(street.path.heading(s)) + 0.01 * np.sin(0.5 * frame + rng_wobble[0])
    pitch = 0.008 * np.sin(0.9 * frame + rng_wobble[1])
    roll = 0.006 * np.sin(1.3 * frame + rng_wobble[2])
    R = rig.rot_z(yaw) @ rig.rot_y(pitch) @ rig.rot_x(roll)
    return rig.rigid(R, [xy[0], xy[1], rig.IMU_HEIGHT + 0.02 * np.sin(0.4 * frame)])


def _pose_gaps(frames: int) -> set[int]:
    gaps = {0}
    if frames > 25:
        gaps |= {17, 18, 19}
    return gaps


def _missing_semantics(frames: int) -> set[int]:
    return {f for f in (6, 23) if f < frames}


def _write_sequence(
    out: Path, name: str, frames: int, seed: int, noise_sigma: float, static_spacing: float | None
) -> list[int]:
    root, gt = out / "KITTI-360", out / "ground_truth" / name
    rng = np.random.default_rng(seed)
    street = Street(frames, rng)
    if static_spacing:
        static = root / "data_3d_semantics" / "train" / name / "static"
        write_static_windows(static, street, frames, static_spacing, seed)
    wobble = rng.uniform(0, 2 * np.pi, 3)
    dirs = {
        "image": root / "data_2d_raw" / name / "image_00" / "data_rect",
        "velo": root / "data_3d_raw" / name / "velodyne_points" / "data",
        "sem": root / "data_2d_semantics" / "train" / name / "image_00" / "semantic",
        "poses": root / "data_poses" / name,
        "depth": gt / "depth",
        "dynamic": gt / "dynamic",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    gaps, no_sem = _pose_gaps(frames), _missing_semantics(frames)
    pose_lines, cam_lines, gt_lines, labelled = [], [], [], []
    for frame in tqdm(range(frames), desc=name, unit="frame", leave=False):
        pose = _imu_pose(street, frame, wobble)
        boxes, moving = street.at(frame)
        r = render_frame(pose, boxes, moving, noise_sigma, rng)
        stem = f"{frame:010d}"
        cv2.imwrite(str(dirs["image"] / f"{stem}.png"), cv2.cvtColor(r.rgb, cv2.COLOR_RGB2BGR))
        r.sweep.tofile(dirs["velo"] / f"{stem}.bin")
        np.save(dirs["depth"] / f"{stem}.npy", r.depth)
        cv2.imwrite(str(dirs["dynamic"] / f"{stem}.png"), r.dynamic.astype(np.uint8) * 255)
        if frame not in no_sem:
            cv2.imwrite(str(dirs["sem"] / f"{stem}.png"), r.labels)
            labelled.append(frame)
        cam0_to_world = pose @ rig.POSE_FROM_RECT
        gt_lines.append(f"{frame} {_fmt(cam0_to_world)}")
        if frame not in gaps:
            pose_lines.append(f"{frame} {_fmt(pose[:3])}")
            cam_lines.append(f"{frame} {_fmt(cam0_to_world)}")
    (dirs["poses"] / "poses.txt").write_text("\n".join(pose_lines) + "\n")
    (dirs["poses"] / "cam0_to_world.txt").write_text("\n".join(cam_lines) + "\n")
    (gt / "cam0_to_world.txt").write_text("\n".join(gt_lines) + "\n")
    return labelled


def generate_synthetic_kitti360(
    out_dir: str | Path,
    frames: int = 40,
    seed: int = 0,
    sequences: int = 2,
    noise_sigma: float = 0.005,
    static_spacing: float | None = 0.2,
) -> SynthDataset:
    """Write `sequences` sequences of `frames` frames; sequence 0000 is listed as train and
    0002 as val in the official-style split files (frames with semantics only). Each sequence
    gets two overlapping static-cloud windows sampled every `static_spacing` metres (None: no
    clouds; KITTI-360's own are centimetre-dense, coarser keeps tests fast)."""
    if not 1 <= sequences <= len(SEQUENCE_IDS):
        raise ValueError(f"sequences must be in 1..{len(SEQUENCE_IDS)}")
    if frames < 2:
        raise ValueError("frames must be >= 2")
    out = Path(out_dir)
    root = out / "KITTI-360"
    _write_calibration(root)
    names = tuple(f"2013_05_28_drive_{i:04d}_sync" for i in SEQUENCE_IDS[:sequences])
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for k, name in enumerate(names):
        labelled = _write_sequence(out, name, frames, seed + k, noise_sigma, static_spacing)
        split = "val" if k == 1 else "train"
        lists[split] += [
            f"data_2d_raw/{name}/image_00/data_rect/{f:010d}.png "
            f"data_2d_semantics/train/{name}/image_00/semantic/{f:010d}.png"
            for f in labelled
        ]
    for split, lines in lists.items():
        path = root / "data_2d_semantics" / "train" / f"2013_05_28_drive_{split}_frames.txt"
        path.write_text("".join(line + "\n" for line in lines))
    log.info("synthetic KITTI-360 written to %s (ground truth in %s)", root, out / "ground_truth")
    return SynthDataset(root, out / "ground_truth", names)


def load_gt_depth(gt_root: str | Path, sequence: str, frame: int) -> np.ndarray:
    """Exact z-depth (376x1408 float32, 0 = sky) of a frame of the synthetic scene."""
    return np.load(Path(gt_root) / sequence / "depth" / f"{frame:010d}.npy")
