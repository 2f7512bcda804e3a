"""COLMAP / ETH3D reader: model (text or binary, via pycolmap), per-image rasters, and the
camera geometry of the stored images in DESIGN.md's conventions.

COLMAP centres pixels at +0.5; intrinsics are shifted by -0.5 on read. Distorted cameras
are undistorted with pycolmap's own camera models (images and every raster through one
remap, points through the undistorted pinhole K); cameras that are not perspective are
rejected, never projected with the wrong model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pycolmap

from shards import ImageSize

from ...errors import InputError
from ...kernels import label_lut, zbuffer_points

PIXEL_CENTRE = 0.5  # COLMAP image coordinates of pixel (0, 0)'s centre
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
OCCLUDED = label_lut(range(1, 256))  # ETH3D masks: 0 visible, 1 occluded, 2 undefined
UNDEFINED = 2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class CameraGeometry:
    """How an image file of one camera becomes a stored (undistorted) image.

    `K` is the OpenCV-convention pinhole of the undistorted image of size `size`;
    `maps` (cv2.remap x/y maps into the file) is None for pinhole cameras.
    """

    model: str
    source_size: ImageSize  # of the image file
    size: ImageSize  # of the undistorted image
    K: np.ndarray
    maps: tuple[np.ndarray, np.ndarray] | None

    def undistort(self, raster: np.ndarray, nearest: bool, fill: float = 0) -> np.ndarray:
        """Resample a raster of the image file into the undistorted image (nearest for depth
        and masks so no value is invented across an edge)."""
        if self.maps is None:
            return raster
        interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return cv2.remap(raster, *self.maps, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


@dataclass(frozen=True)
class View:
    """One registered image: its name, camera, pose and the 3D points its track lists."""

    name: str
    camera_id: int
    cam_from_world: np.ndarray  # 4x4
    point_ids: np.ndarray  # rows of ColmapModel.points


@dataclass(frozen=True)
class ColmapModel:
    views: list[View]  # registered images, sorted by name
    unregistered: list[str]  # image names without a pose
    cameras: dict[int, CameraGeometry]
    points: np.ndarray  # (N, 3) float64 world coordinates


def _pinhole_K(camera: pycolmap.Camera) -> np.ndarray:
    """OpenCV-convention K of a pinhole COLMAP camera (principal point moved by -0.5)."""
    K = np.asarray(camera.calibration_matrix(), dtype=np.float64).copy()
    K[0, 2] -= PIXEL_CENTRE
    K[1, 2] -= PIXEL_CENTRE
    return K


def _undistortion_maps(camera: pycolmap.Camera, pinhole: pycolmap.Camera) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel centre of the undistorted image, where it lies in the distorted file."""
    jj, ii = np.meshgrid(np.arange(pinhole.width), np.arange(pinhole.height))
    centres = np.stack([jj.ravel(), ii.ravel()], axis=1).astype(np.float64) + PIXEL_CENTRE
    rays = np.asarray(pinhole.cam_from_img(centres))
    rays = np.hstack([rays, np.ones((len(rays), 1))])
    source = np.asarray(camera.img_from_cam(rays)) - PIXEL_CENTRE
    source[~np.isfinite(source)] = -1.0
    shape = (pinhole.height, pinhole.width)
    return (
        source[:, 0].reshape(shape).astype(np.float32),
        source[:, 1].reshape(shape).astype(np.float32),
    )


def camera_geometry(camera: pycolmap.Camera, model_dir: Path, image_name: str) -> CameraGeometry:
    """Stored-image geometry of a camera; InputError for models that cannot be undistorted."""
    name = camera.model.name
    source_size = ImageSize(int(camera.height), int(camera.width))
    if name in PINHOLE_MODELS:
        return CameraGeometry(name, source_size, source_size, _pinhole_K(camera), None)
    if not camera.is_perspective():
        raise InputError(
            model_dir,
            f"camera {camera.camera_id} of image {image_name!r} uses model {name}, which is not "
            f"perspective and cannot be undistorted to a pinhole; supported: {', '.join(PINHOLE_MODELS)} "
            "and distorted perspective models (SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV, "
            "OPENCV_FISHEYE, THIN_PRISM_FISHEYE, ...)",
        )
    pinhole = pycolmap.undistort_camera(pycolmap.UndistortCameraOptions(), camera)
    size = ImageSize(int(pinhole.height), int(pinhole.width))
    return CameraGeometry(name, source_size, size, _pinhole_K(pinhole), _undistortion_maps(camera, pinhole))


def _cam_from_world(image: pycolmap.Image) -> np.ndarray:
    pose = image.cam_from_world
    pose = pose() if callable(pose) else pose  # a method since pycolmap 3.12, a property before
    out = np.eye(4)
    out[:3, :4] = pose.matrix()
    return out


def check_image_name(model_dir: Path, name: str) -> str:
    """An image name from the model is joined to the image, mask and depth folders: it must be
    a relative path that stays inside them (no absolute path, no '..')."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or PurePosixPath(name).is_absolute() or Path(name).is_absolute() or ".." in parts:
        raise InputError(
            model_dir, f"image name {name!r} must be a relative path inside the image folder (no '..')"
        )
    return name


def read_model(model_dir: Path) -> ColmapModel:
    """Cameras, registered images (sorted by name) and 3D points with per-image tracks."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "COLMAP model folder does not exist")
    try:
        rec = pycolmap.Reconstruction(model_dir)
    except (ValueError, RuntimeError) as exc:
        raise InputError(model_dir, f"not a readable COLMAP model (cameras/images/points3D): {exc}") from None
    xyz: list[np.ndarray] = []
    owners: dict[int, list[int]] = {}  # image id -> rows of `points` its track lists
    for row, point in enumerate(rec.points3D.values()):  # one pass: each binding lookup is costly
        xyz.append(point.xyz)
        for element in point.track.elements:
            owners.setdefault(element.image_id, []).append(row)
    points = np.array(xyz, dtype=np.float64).reshape(-1, 3)
    cameras: dict[int, CameraGeometry] = {}
    views, unregistered = [], []
    for image_id, image in sorted(rec.images.items(), key=lambda item: item[1].name):
        check_image_name(model_dir, image.name)
        if not image.has_pose:
            unregistered.append(image.name)
            continue
        if image.camera_id not in cameras:
            cameras[image.camera_id] = camera_geometry(rec.cameras[image.camera_id], model_dir, image.name)
        ids = np.unique(np.asarray(owners.get(image_id, []), dtype=np.int64))
        views.append(View(image.name, image.camera_id, _cam_from_world(image), ids))
    return ColmapModel(views, sorted(unregistered), cameras, points)


def sparse_depth(
    points: np.ndarray,
    cam_from_world: np.ndarray,
    K: np.ndarray,
    size: ImageSize,
    occlusion: np.ndarray | None = None,
    K_occlusion: np.ndarray | None = None,
) -> np.ndarray:
    """Z-buffered depth of one image's track points at the stored size; points that fall on
    non-zero pixels of the occlusion mask (intrinsics K_occlusion) are dropped."""
    depth = np.zeros(size, dtype=np.float32)
    labels = np.zeros((0, 0), np.uint8) if occlusion is None else occlusion
    K_labels = K if K_occlusion is None else K_occlusion
    keep = np.ones(len(points), dtype=np.bool_)
    zbuffer_points(points, keep, cam_from_world, K, depth, 0.0, labels, K_labels, OCCLUDED)
    return depth


class RasterFolder:
    """Finds the file for an image name in a folder of per-image rasters: same relative
    path, same path with another suffix, or (ETH3D keeps masks under the distorted
    images' folder name) the only file under the folder with the same stem."""

    def __init__(self, root: Path, suffixes: tuple[str, ...]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(self.root, "folder does not exist")
        self.suffixes = suffixes
        self._by_stem: dict[str, list[Path]] | None = None

    def find(self, name: str) -> Path | None:
        relative = Path(name)
        candidates = [relative, *(relative.with_suffix(s) for s in self.suffixes)]
        candidates += [Path(f"{name}{s}") for s in self.suffixes]
        for candidate in candidates:
            if (self.root / candidate).is_file():
                return self.root / candidate
        if self._by_stem is None:
            self._by_stem = {}
            for path in sorted(self.root.rglob("*")):
                if path.is_file():
                    self._by_stem.setdefault(path.stem, []).append(path)
        matches = self._by_stem.get(relative.stem, [])
        return matches[0] if len(matches) == 1 else None


def _check_size(path: Path, array: np.ndarray, size: ImageSize) -> None:
    if array.shape[:2] != size:
        raise InputError(
            path, f"raster is {array.shape[1]}x{array.shape[0]}, the camera is {size.width}x{size.height}"
        )


def read_rgb(path: Path, size: ImageSize) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "image unreadable or corrupt")
    _check_size(path, bgr, size)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, size: ImageSize) -> np.ndarray:
    """Single-channel uint8 PNG (occlusion or building mask)."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise InputError(path, "mask must be a readable single-channel 8-bit PNG")
    _check_size(path, mask, size)
    return mask


def read_dense_depth(path: Path, size: ImageSize, png_scale: float) -> np.ndarray:
    """Ground-truth z-depth in metres, 0 where invalid.

    A PNG (recognised by its signature, whatever the file is called) holds 16-bit depth
    divided by `png_scale` (1000: millimetres); any other file is ETH3D's raw format (named
    like the image): width*height little-endian float32, inf or <= 0 meaning invalid.
    """
    with open(path, "rb") as fh:
        is_png = fh.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    if is_png:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
            raise InputError(path, "depth PNG must be a readable single-channel 16-bit image")
        _check_size(path, raw, size)
        return (raw.astype(np.float64) / png_scale).astype(np.float32)
    data = np.fromfile(path, dtype="<f4")
    if data.size != size.width * size.height:
        camera = f"{size.width}x{size.height}"
        raise InputError(path, f"raw float32 depth holds {data.size} values, the camera has {camera} pixels")
    depth = data.reshape(size).astype(np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth
