"""`kitti360-prep colmap`: one COLMAP / ETH3D scene into the same shards as KITTI-360.

Frames are the registered images in name order (frame = rank, names in the manifest).
Depth comes from dense ground truth when given (gt_dense), else from the sparse points
whose tracks list the image (colmap_sparse). Units, resume and atomic commits work as in
`build`: a unit is finished when its index file carries the unit's config hash.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shards import UnitWriter, discard_debris

from .colmap import (
    UNDEFINED,
    ColmapModel,
    RasterFolder,
    read_dense_depth,
    read_mask,
    read_model,
    read_rgb,
    sparse_depth,
)
from .errors import InputError
from .frames import frame_record, resize_image, resize_labels
from .manifest import config_hash, files_fingerprint, update_manifest
from .projection import resized_intrinsics, target_size
from .units import pending_units, units_skipped

log = logging.getLogger(__name__)
DATASET = "colmap"
SPLITS = ("train", "val", "test")
DEPTH_SUFFIXES = (".png",)
MASK_SUFFIXES = (".png",)


@dataclass(frozen=True)
class ColmapSource:
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


@dataclass(frozen=True)
class ColmapConfig:
    """Everything that changes the written data; hashed into each unit's completion marker."""

    width: int | None = 518
    depth_scale: float = 1000.0  # 16-bit depth PNG units per metre
    split: str = "train"
    chunk_frames: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FramePlan:
    frame: int  # also the index into ColmapModel.views
    image: Path
    rasters: dict[str, Path | None] = field(default_factory=dict)


@dataclass
class UnitPlan:
    unit: str
    size: tuple[int, int]  # stored (W, H)
    frames: list[FramePlan]
    config_hash: str = ""


def _unit_hash(source: ColmapSource, config: ColmapConfig, model: ColmapModel, unit: UnitPlan) -> str:
    model_files = sorted(p for p in source.model.iterdir() if p.is_file())
    inputs = [*model_files, *(f.image for f in unit.frames)]
    inputs += [p for f in unit.frames for p in f.rasters.values() if p is not None]
    names = {f.frame: model.views[f.frame].name for f in unit.frames}
    folders = sorted(k for k in ("masks", "depth", "building_masks") if getattr(source, k) is not None)
    return config_hash({**config.to_dict(), "frames": names, "folders": folders}, files_fingerprint(inputs))


def plan_scene(
    source: ColmapSource, model: ColmapModel, config: ColmapConfig
) -> tuple[list[UnitPlan], dict[int, str]]:
    """Units (consecutive frames of one stored size) and frames skipped before building:
    images missing on disk, and those lacking a required occlusion mask or depth map."""
    folders = source.folders()
    skipped: dict[int, str] = {}
    units: dict[str, UnitPlan] = {}
    for frame, view in enumerate(model.views):
        image = source.images / view.name
        if not image.is_file():
            skipped[frame] = f"no image file {image}"
            continue
        rasters = {key: folder.find(view.name) for key, folder in folders.items()}
        missing = [key for key in ("masks", "depth") if key in rasters and rasters[key] is None]
        if missing:
            skipped[frame] = f"no {' or '.join(missing)} file for image {view.name!r}"
            continue
        size = target_size(config.width, *model.cameras[view.camera_id].size)
        key = f"{frame // config.chunk_frames * config.chunk_frames:06d}-{size[0]}x{size[1]}"
        units.setdefault(key, UnitPlan(key, size, [])).frames.append(FramePlan(frame, image, rasters))
    plans = list(units.values())
    for unit in plans:
        unit.config_hash = _unit_hash(source, config, model, unit)
    return plans, skipped


def _frame_depth(
    model: ColmapModel, plan: FramePlan, config: ColmapConfig, K: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, str]:
    """Stored-size depth and its source: dense GT (nearest-resampled) or z-buffered points."""
    view = model.views[plan.frame]
    geometry = model.cameras[view.camera_id]
    occlusion = None
    if plan.rasters.get("masks") is not None:
        occlusion = read_mask(plan.rasters["masks"], geometry.source_size)
        occlusion = geometry.undistort(occlusion, nearest=True, fill=UNDEFINED)
    if plan.rasters.get("depth") is None:
        points = model.points[view.point_ids]
        return sparse_depth(points, view.cam_from_world, K, size, occlusion, geometry.K), "colmap_sparse"
    depth = read_dense_depth(plan.rasters["depth"], geometry.source_size, config.depth_scale)
    depth = geometry.undistort(depth, nearest=True)
    if occlusion is not None:
        depth[occlusion != 0] = 0.0
    return resize_labels(depth, size), "gt_dense"


def _building_mask(model: ColmapModel, plan: FramePlan, size: tuple[int, int]) -> np.ndarray | None:
    path = plan.rasters.get("building_masks")
    if path is None:
        return None
    geometry = model.cameras[model.views[plan.frame].camera_id]
    mask = geometry.undistort(read_mask(path, geometry.source_size), nearest=True)
    return resize_labels(mask, size) > 0


def build_unit(
    source: ColmapSource,
    model: ColmapModel,
    out: Path,
    unit: UnitPlan,
    config: ColmapConfig,
    on_frame: Callable[[], None] | None = None,
) -> dict[int, str]:
    """Build one unit and commit it atomically; returns frames skipped with reasons."""
    width, height = unit.size
    writer = UnitWriter(out, DATASET, source.name, unit.unit, height, width, capacity=len(unit.frames))
    skipped: dict[int, str] = {}
    try:
        for plan in unit.frames:
            if on_frame is not None:
                on_frame()
            view = model.views[plan.frame]
            geometry = model.cameras[view.camera_id]
            K = resized_intrinsics(geometry.K, geometry.size, unit.size)
            try:
                image = geometry.undistort(read_rgb(plan.image, geometry.source_size), nearest=False)
                depth, depth_source = _frame_depth(model, plan, config, K, unit.size)
                building = _building_mask(model, plan, unit.size)
            except InputError as exc:
                skipped[plan.frame] = str(exc)
                log.warning("skipping frame %d (%s): %s", plan.frame, view.name, exc)
                continue
            arrays, stats = frame_record(
                resize_image(image, unit.size), depth, None, K, view.cam_from_world, (),
                building_mask=np.ones((height, width), bool) if building is None else building,
                building_known=building is not None,
            )  # fmt: skip
            row = {"dataset": DATASET, "sequence": source.name, "frame": plan.frame, "split": config.split}
            writer.add(arrays, {**row, **stats, "sweeps": 0, "depth_source": depth_source})
        writer.commit(unit.config_hash, skipped)
    except BaseException:
        writer.abort()
        raise
    return skipped


def build_colmap(
    source: ColmapSource,
    out: Path,
    config: ColmapConfig | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Build (or resume building) one scene's shards; returns its manifest entry."""
    config = config or ColmapConfig()
    if config.split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, got {config.split!r}")
    if not source.name or "__" in source.name or "/" in source.name:
        raise ValueError(f"--name {source.name!r}: must be non-empty, without '/' or '__'")
    if not source.images.is_dir():
        raise InputError(source.images, "image folder does not exist")
    model = read_model(source.model)
    units, skipped = plan_scene(source, model, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    discard_debris(out)
    todo = set(pending_units(out, DATASET, source.name, {u.unit: u.config_hash for u in units}, force))
    log.info("%d of %d units to build (%d already complete)", len(todo), len(units), len(units) - len(todo))
    work = [u for u in units if u.unit in todo]
    bar = tqdm(total=sum(len(u.frames) for u in work), unit="frame", desc=source.name, disable=not progress)
    for unit in work:
        build_unit(source, model, out, unit, config, on_frame=lambda: bar.update(1))
    bar.close()
    skipped.update(units_skipped(out, DATASET, source.name, [u.unit for u in units]))
    unregistered = {name: "not registered (no pose in the model)" for name in model.unregistered}
    entry = {
        "fingerprint": hashlib.sha256("|".join(u.config_hash for u in units).encode()).hexdigest()[:16],
        "units": [u.unit for u in units],
        "frames": {str(f): v.name for f, v in enumerate(model.views)},
        "frames_written": sum(1 for u in units for f in u.frames if f.frame not in skipped),
        "skipped": {str(f): r for f, r in sorted(skipped.items())},
        "unregistered": unregistered,
    }
    section = f"{DATASET}/{source.name}"
    manifest = update_manifest(out, section, {**config.to_dict(), **_source_dict(source)}, {section: entry})
    return {"manifest": str(manifest), **entry}


def _source_dict(source: ColmapSource) -> dict:
    return {k: None if v is None else str(v) for k, v in asdict(source).items()}
