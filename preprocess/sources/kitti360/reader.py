"""KITTI-360 raw-data reader: calibration, poses, sweeps, images, semantics, split lists.

Everything returned is in DESIGN.md's conventions; every malformed input raises
`InputError` naming the file. Frame-level problems (a truncated sweep, a corrupt PNG) are
raised too, and the source decides whether to skip and count them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from shards import ImageSize

from ...errors import InputError

SEQUENCE_PATTERN = "2013_05_28_drive_{:04d}_sync"
# labels of objects that may move (DESIGN.md): their points are not accumulated across frames
DYNAMIC_LABELS = (24, 25, 26, 27, 28, 31, 32, 33, 43)
BUILDING_LABEL = 11


def _parse_floats(path: Path, text: str, count: int, what: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise InputError(path, f"{what}: non-numeric value ({exc})") from None
    if values.size != count:
        raise InputError(path, f"{what}: expected {count} numbers, found {values.size}")
    if not np.all(np.isfinite(values)):
        raise InputError(path, f"{what}: contains NaN or infinity")
    return values


# |R^T R - I| and |det R - 1| above this: not a rotation (files print about 10 digits)
RIGID_TOLERANCE = 1e-3
SPLIT_NAMES = ("train", "val")
SWEEP_RECORD_BYTES = 16  # x, y, z, reflectance as float32


def _check_rigid(path: Path, where: str, transform: np.ndarray) -> None:
    """A pose or extrinsic must be a rotation plus translation: a scaled, sheared or singular
    rotation would silently bend every projected point."""
    R = transform[:3, :3]
    deviation = float(np.abs(R.T @ R - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if deviation > RIGID_TOLERANCE or abs(det - 1.0) > RIGID_TOLERANCE:
        raise InputError(
            path,
            f"{where}: rotation is not rigid (max |R^T R - I| = {deviation:.3g}, det R = {det:.6g}); "
            "expected an orthonormal rotation with det 1",
        )
    if transform.shape == (4, 4) and not np.array_equal(transform[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(path, f"{where}: last row must be 0 0 0 1, got {transform[3].tolist()}")


def _homogeneous(m34: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :4] = m34.reshape(3, 4)
    return out


def _read_keyed(path: Path) -> dict[str, str]:
    """'KEY: numbers' lines of a KITTI calibration file."""
    if not path.is_file():
        raise InputError(path, "calibration file not found")
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            entries[key.strip()] = value
    return entries


def _require(path: Path, entries: dict[str, str], key: str, count: int) -> np.ndarray:
    if key not in entries:
        raise InputError(path, f"missing calibration key {key!r}")
    return _parse_floats(path, entries[key], count, key)


class SweepPoints(NamedTuple):
    """A sweep's usable points and how many non-finite ones were dropped from its file."""

    points: np.ndarray  # (N, 3) float32
    dropped: int


@dataclass(frozen=True)
class Calibration:
    """Rectified camera 0 intrinsics and the rigid transforms linking camera, LiDAR and IMU."""

    K: np.ndarray  # 3x3, pixels of the rectified image
    size: ImageSize  # of the rectified image (S_rect_00)
    rect_from_cam: np.ndarray  # 4x4, R_rect_00
    pose_from_cam: np.ndarray  # 4x4, calib_cam_to_pose image_00 (unrectified cam0 -> IMU)
    velo_from_cam: np.ndarray  # 4x4, calib_cam_to_velo (unrectified cam0 -> velodyne)

    @cached_property
    def rect_from_velo(self) -> np.ndarray:
        return self.rect_from_cam @ np.linalg.inv(self.velo_from_cam)

    @cached_property
    def pose_from_rect(self) -> np.ndarray:
        return self.pose_from_cam @ np.linalg.inv(self.rect_from_cam)


def read_calibration(root: Path) -> Calibration:
    calib_dir = Path(root) / "calibration"
    persp = calib_dir / "perspective.txt"
    entries = _read_keyed(persp)
    p_rect = _require(persp, entries, "P_rect_00", 12).reshape(3, 4)
    if not (p_rect[0, 0] > 0 and p_rect[1, 1] > 0):
        focal = f"{p_rect[0, 0]}, {p_rect[1, 1]}"
        raise InputError(persp, f"P_rect_00: focal lengths must be positive, got {focal}")
    rect_from_cam = np.eye(4)
    rect_from_cam[:3, :3] = _require(persp, entries, "R_rect_00", 9).reshape(3, 3)
    _check_rigid(persp, "R_rect_00", rect_from_cam)
    size = _require(persp, entries, "S_rect_00", 2)
    if not (np.all(size >= 1) and np.array_equal(size, np.round(size))):
        raise InputError(persp, f"S_rect_00: width and height must be positive integers, got {size.tolist()}")

    to_pose_path = calib_dir / "calib_cam_to_pose.txt"
    pose_from_cam = _homogeneous(_require(to_pose_path, _read_keyed(to_pose_path), "image_00", 12))
    _check_rigid(to_pose_path, "image_00", pose_from_cam)

    to_velo_path = calib_dir / "calib_cam_to_velo.txt"
    if not to_velo_path.is_file():
        raise InputError(to_velo_path, "calibration file not found")
    velo_from_cam = _homogeneous(_parse_floats(to_velo_path, to_velo_path.read_text(), 12, "cam_to_velo"))
    _check_rigid(to_velo_path, "cam_to_velo", velo_from_cam)
    return Calibration(
        K=p_rect[:, :3].copy(),
        size=ImageSize(height=int(size[1]), width=int(size[0])),
        rect_from_cam=rect_from_cam,
        pose_from_cam=pose_from_cam,
        velo_from_cam=velo_from_cam,
    )


def _read_frame_table(path: Path, values: int) -> dict[int, np.ndarray]:
    """Lines 'frame v1 .. vN' -> {frame: 4x4}; for poses.txt (3x4) and cam0_to_world.txt (4x4).
    Every pose must be rigid and every frame listed once."""
    if not path.is_file():
        raise InputError(path, "pose file not found")
    table: dict[int, np.ndarray] = {}
    first_line: dict[int, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        head, _, rest = line.strip().partition(" ")
        try:
            frame = int(head)
        except ValueError:
            raise InputError(path, f"line {lineno}: frame number {head!r} is not an integer") from None
        if frame in first_line:
            raise InputError(path, f"line {lineno}: frame {frame} repeats line {first_line[frame]}")
        m = _parse_floats(path, rest, values, f"line {lineno}")
        pose = _homogeneous(m[:12]) if values == 12 else m.reshape(4, 4)
        _check_rigid(path, f"line {lineno} (frame {frame})", pose)
        table[frame], first_line[frame] = pose, lineno
    if not table:
        raise InputError(path, "contains no poses")
    return table


def sequence_name(spec: str) -> str:
    """'0000', '0' or a full name -> the full KITTI-360 sequence folder name."""
    spec = spec.strip()
    return SEQUENCE_PATTERN.format(int(spec)) if spec.isdigit() else spec


def list_sequences(root: Path) -> list[str]:
    raw = Path(root) / "data_2d_raw"
    if not raw.is_dir():
        raise InputError(raw, "folder not found: is --root a KITTI-360 root?")
    return sorted(p.name for p in raw.iterdir() if p.is_dir())


def split_list_paths(root: Path) -> dict[str, Path]:
    """The official 2D semantic frame lists, split -> file."""
    split_dir = Path(root) / "data_2d_semantics" / "train"
    return {split: split_dir / f"2013_05_28_drive_{split}_frames.txt" for split in SPLIT_NAMES}


def read_split_lists(root: Path) -> dict[tuple[str, int], str]:
    """(sequence, frame) -> 'train'/'val' from the official 2D semantic frame lists.

    Both lists are required: without them no frame's split is known, and guessing would leak
    validation frames into training. A frame listed twice, or in both lists, is an error."""
    assignment: dict[tuple[str, int], str] = {}
    where: dict[tuple[str, int], str] = {}
    pattern = re.compile(r"data_2d_raw/([^/\s]+)/image_00/data_rect/(\d+)\.png")
    for split, path in split_list_paths(root).items():
        if not path.is_file():
            raise InputError(path, f"{split} split list not found; it assigns frames to train/val")
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            match = pattern.search(line)
            if match is None:
                expected = "data_2d_raw/<sequence>/image_00/data_rect/<frame>.png"
                raise InputError(path, f"line {lineno}: no {expected}")
            key = (match.group(1), int(match.group(2)))
            if key in assignment:
                problem = f"{key[0]} frame {key[1]} already listed at {where[key]}"
                raise InputError(path, f"line {lineno}: {problem}")
            assignment[key], where[key] = split, f"{path.name} line {lineno}"
    return assignment


class Sequence:
    """File access for one KITTI-360 sequence."""

    def __init__(self, root: Path, name: str, calibration: Calibration) -> None:
        self.root = Path(root)
        self.name = name
        self.calib = calibration
        self.image_dir = self.root / "data_2d_raw" / name / "image_00" / "data_rect"
        self.velo_dir = self.root / "data_3d_raw" / name / "velodyne_points" / "data"
        self.semantic_dir = self.root / "data_2d_semantics" / "train" / name / "image_00" / "semantic"
        self.pose_dir = self.root / "data_poses" / name
        if not self.image_dir.is_dir():
            raise InputError(self.image_dir, f"no images for sequence {name}")

    @cached_property
    def frames(self) -> list[int]:
        """Frames that have an image (the candidates for depth maps)."""
        frames = sorted(int(p.stem) for p in self.image_dir.glob("*.png") if p.stem.isdigit())
        if not frames:
            raise InputError(self.image_dir, f"sequence {self.name} has no images")
        return frames

    @cached_property
    def imu_poses(self) -> dict[int, np.ndarray]:
        return _read_frame_table(self.pose_dir / "poses.txt", 12)

    @cached_property
    def world_from_rect(self) -> dict[int, np.ndarray]:
        """Rectified camera 0 -> world for every frame with a pose: poses @ cam_to_pose @ inv(R_rect)."""
        return {f: pose @ self.calib.pose_from_rect for f, pose in self.imu_poses.items()}

    def read_cam0_to_world(self) -> dict[int, np.ndarray]:
        """The dataset's own cam0_to_world.txt (rectified cam0 -> world), used as a cross-check."""
        return _read_frame_table(self.pose_dir / "cam0_to_world.txt", 16)

    def sweep_path(self, frame: int) -> Path:
        return self.velo_dir / f"{frame:010d}.bin"

    def read_sweep(self, frame: int) -> SweepPoints:
        """Velodyne points in the LiDAR frame (reflectance dropped). A file that is empty or
        not whole 16-byte records is an error; points with a NaN or infinite coordinate are
        dropped and counted."""
        path = self.sweep_path(frame)
        if not path.is_file():
            raise InputError(path, "LiDAR sweep not found")
        size = path.stat().st_size
        if size == 0:
            raise InputError(path, "empty LiDAR sweep (0 bytes)")
        if size % SWEEP_RECORD_BYTES:
            raise InputError(path, f"truncated sweep: {size} bytes is not a multiple of {SWEEP_RECORD_BYTES}")
        points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)[:, :3]
        finite = np.isfinite(points).all(axis=1)
        if finite.all():
            return SweepPoints(points, 0)
        return SweepPoints(points[finite], int(finite.size - finite.sum()))

    def image_path(self, frame: int) -> Path:
        return self.image_dir / f"{frame:010d}.png"

    def read_image(self, frame: int) -> np.ndarray:
        """RGB uint8 at the rectified size given by S_rect_00."""
        path = self.image_path(frame)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(path, "image missing, unreadable or corrupt PNG")
        self._check_size(path, bgr)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def semantic_path(self, frame: int) -> Path:
        return self.semantic_dir / f"{frame:010d}.png"

    def read_semantic(self, frame: int) -> np.ndarray | None:
        """uint8 label ids, or None when the frame has no 2D semantic annotation."""
        path = self.semantic_path(frame)
        if not path.is_file():
            return None
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise InputError(path, "unreadable or corrupt semantic PNG")
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise InputError(
                path, f"semantic map must be single-channel uint8, got {labels.dtype} {labels.shape}"
            )
        self._check_size(path, labels)
        return labels

    def _check_size(self, path: Path, array: np.ndarray) -> None:
        h, w = array.shape[:2]
        size = self.calib.size
        if (h, w) != size:
            raise InputError(path, f"image is {w}x{h}, calibration S_rect_00 says {size.width}x{size.height}")
