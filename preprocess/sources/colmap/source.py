"""One COLMAP / ETH3D scene as a source, into the same shards as KITTI-360.

Frames are the registered images in name order (frame = rank, names in the manifest); a
unit holds consecutive frames of one stored size. Depth comes from dense ground truth when
given (gt_dense), else from the sparse points whose tracks list the image (colmap_sparse).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np

from shards import ImageSize
from shards.layout import UNIT_SEPARATOR
from shards.writer import DEFAULT_FRAMES_PER_SHARD

from ...errors import InputError
from ...imaging import (
    check_chunk_frames,
    check_width,
    resize_image,
    resize_labels,
    resized_intrinsics,
    target_size,
)
from ...manifest import config_hash, files_fingerprint
from ...record import FrameRecord, Skip
from .. import SequencePlan, UnitPlan
from .reader import (
    UNDEFINED,
    CameraGeometry,
    ColmapModel,
    RasterFolder,
    View,
    read_dense_depth,
    read_mask,
    read_model,
    read_rgb,
    sparse_depth,
)

SPLITS = ("train", "val", "test")
DEPTH_SUFFIXES = (".png",)
MASK_SUFFIXES = (".png",)
RASTER_KINDS = ("masks", "depth", "building_masks")


@dataclass(frozen=True)
class ColmapScene:
    """Where one scene's inputs live; optional folders are None when not given."""

    name: str
    model: Path
    images: Path
    masks: Path | None = None
    depth: Path | None = None
    building_masks: Path | None = None

    def folders(self) -> dict[str, RasterFolder]:
        given = {
            "masks": (self.masks, MASK_SUFFIXES),
            "depth": (self.depth, DEPTH_SUFFIXES),
            "building_masks": (self.building_masks, MASK_SUFFIXES),
        }
        return {key: RasterFolder(path, sfx) for key, (path, sfx) in given.items() if path is not None}

    def to_dict(self) -> dict[str, str | None]:
        return {k: None if v is None else str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ColmapConfig:
    """Everything that changes the written data; hashed into each unit's completion marker
    (field names included: renaming one makes every finished unit look changed)."""

    width: int | None = 518
    depth_scale: float = 1000.0  # 16-bit depth PNG units per metre
    split: str = "train"
    chunk_frames: int = 128

    def __post_init__(self) -> None:
        check_width(self.width)
        check_chunk_frames(self.chunk_frames)
        if not self.depth_scale > 0:
            raise ValueError(f"--depth-scale must be > 0 (depth PNG units per metre), got {self.depth_scale}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageInputs:
    """The files of one registered image: the image and its rasters (None: no file for it)."""

    image: Path
    rasters: dict[str, Path | None]


@dataclass
class ColmapSource:
    """A scene's registered images. Images missing on disk, or lacking a given occlusion mask
    or depth file, are skipped when planning; unreadable ones while building. Without building
    masks the stored mask is all-true and marked unknown."""

    scene: ColmapScene
    config: ColmapConfig = field(default_factory=ColmapConfig)
    dataset: ClassVar[str] = "colmap"

    @property
    def progress_label(self) -> str:
        return self.scene.name

    @cached_property
    def model(self) -> ColmapModel:
        return read_model(self.scene.model)

    def check(self) -> None:
        name = self.scene.name
        if self.config.split not in SPLITS:
            raise ValueError(f"--split must be one of {SPLITS}, got {self.config.split!r}")
        if not name or UNIT_SEPARATOR in name or "/" in name:
            raise ValueError(f"--name {name!r}: must be non-empty, without '/' or '{UNIT_SEPARATOR}'")
        if not self.scene.images.is_dir():
            raise InputError(self.scene.images, "image folder does not exist")

    def plan(self) -> list[SequencePlan]:
        """The scene as one sequence: units of consecutive frames of one stored size."""
        model, config = self.model, self.config
        folders = self.scene.folders()
        skipped: dict[int, str] = {}
        groups: dict[str, tuple[ImageSize, dict[int, ImageInputs]]] = {}
        for frame, view in enumerate(model.views):
            image = self.scene.images / view.name
            if not image.is_file():
                skipped[frame] = f"no image file {image}"
                continue
            rasters = {key: folder.find(view.name) for key, folder in folders.items()}
            missing = [key for key in ("masks", "depth") if key in rasters and rasters[key] is None]
            if missing:
                skipped[frame] = f"no {' or '.join(missing)} file for image {view.name!r}"
                continue
            size = target_size(config.width, model.cameras[view.camera_id].size)
            key = f"{frame // config.chunk_frames * config.chunk_frames:06d}-{size.width}x{size.height}"
            groups.setdefault(key, (size, {}))[1][frame] = ImageInputs(image, rasters)
        units = [
            UnitPlan(self.scene.name, key, size, frames, self._unit_hash(frames))
            for key, (size, frames) in groups.items()
        ]
        details = {
            "frames": {str(f): v.name for f, v in enumerate(model.views)},
            "unregistered": {name: "not registered (no pose in the model)" for name in model.unregistered},
        }
        return [SequencePlan(self.scene.name, units, skipped, details)]

    def _unit_hash(self, frames: dict[int, ImageInputs]) -> str:
        model_files = sorted(p for p in self.scene.model.iterdir() if p.is_file())
        inputs = [*model_files, *(f.image for f in frames.values())]
        inputs += [p for f in frames.values() for p in f.rasters.values() if p is not None]
        names = {frame: self.model.views[frame].name for frame in frames}
        folders = sorted(k for k in RASTER_KINDS if getattr(self.scene, k) is not None)
        settings = {**self.config.to_dict(), "frames": names, "folders": folders}
        return config_hash(settings, files_fingerprint(inputs))

    def frames_per_shard(self, size: ImageSize) -> int:
        return DEFAULT_FRAMES_PER_SHARD

    def records(self, unit: UnitPlan[ImageInputs]) -> Iterator[FrameRecord | Skip]:
        for frame, inputs in unit.frames.items():
            view = self.model.views[frame]
            geometry = self.model.cameras[view.camera_id]
            K = resized_intrinsics(geometry.K, geometry.size, unit.size)
            try:
                image = geometry.undistort(read_rgb(inputs.image, geometry.source_size), nearest=False)
                depth, depth_source = self._depth(view, geometry, inputs, K, unit.size)
                building = _building_mask(geometry, inputs, unit.size)
            except InputError as exc:
                yield Skip(frame, str(exc), view.name)
                continue
            yield FrameRecord(
                frame=frame, split=self.config.split, image=resize_image(image, unit.size), depth=depth,
                semantic=None, building_mask=np.ones(unit.size, bool) if building is None else building,
                building_known=building is not None, K=K, cam_from_world=view.cam_from_world,
                depth_source=depth_source, sweeps=0,
            )  # fmt: skip

    def _depth(
        self, view: View, geometry: CameraGeometry, inputs: ImageInputs, K: np.ndarray, size: ImageSize
    ) -> tuple[np.ndarray, str]:
        """Stored-size depth and its source: dense GT (nearest-resampled) or z-buffered points."""
        occlusion = None
        if inputs.rasters.get("masks") is not None:
            occlusion = read_mask(inputs.rasters["masks"], geometry.source_size)
            occlusion = geometry.undistort(occlusion, nearest=True, fill=UNDEFINED)
        if inputs.rasters.get("depth") is None:
            points = self.model.points[view.point_ids]
            return sparse_depth(points, view.cam_from_world, K, size, occlusion, geometry.K), "colmap_sparse"
        depth = read_dense_depth(inputs.rasters["depth"], geometry.source_size, self.config.depth_scale)
        depth = geometry.undistort(depth, nearest=True)
        if occlusion is not None:
            depth[occlusion != 0] = 0.0
        return resize_labels(depth, size), "gt_dense"

    def manifest_config(self) -> tuple[str, dict]:
        return f"{self.dataset}/{self.scene.name}", {**self.config.to_dict(), **self.scene.to_dict()}


def _building_mask(geometry: CameraGeometry, inputs: ImageInputs, size: ImageSize) -> np.ndarray | None:
    """The image's building mask at the stored size; None without a mask file."""
    path = inputs.rasters.get("building_masks")
    if path is None:
        return None
    mask = geometry.undistort(read_mask(path, geometry.source_size), nearest=True)
    return resize_labels(mask, size) > 0
